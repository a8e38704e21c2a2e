"""Published checkpoints -> project checkpoints, on state dicts built from recorded facts.

``data/published_state_dicts.json.gz`` holds the key names, shapes and dtypes of the state dicts
the published code saves (recorded by ``benchmarks/published_parity.py --facts`` from the
published model classes; the torchvggish file for the AVSBench formats). The tests build such
state dicts with a distinct constant per tensor, stored as stride-0 views (a full-size
checkpoint in a few kilobytes), and check the conversion key by key: every published key is used
or dropped by name, every model key is filled from the right published key, and every mismatch
is an error that lists the keys and names the right format. The numerical parity with the
published forward passes is ``benchmarks/published_parity.py`` (it needs the published code).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import PUBLISHED_FACTS as FACTS
from helpers import published_state

from avsrobust.errors import InputError
from avsrobust.models import build_model
from avsrobust.models.backbones import PVTv2Features
from avsrobust.models.published import (
    FORMAT_NAMES,
    FORMATS,
    FormatMismatch,
    convert_state_dict,
    fitting_formats,
    import_checkpoint,
    main,
)
from avsrobust.weights import pvt_original_to_timm

pytestmark = pytest.mark.usefixtures("few_threads")

UNUSED_BRANCH = "B2_ResNet's second branch (layer3_2/layer4_2): the forward never runs it"
TOP_LATERAL = "path4.resConfUnit1: the top fusion block gets one input, so it never runs"
DEAD_HEAD = "AVSegHead's fpn/attn_fc: built but never called by its forward"
#: Published keys dropped by name, per format (reason -> count; 174 = 2 x (6 + 3) bottlenecks).
DROPPED = {
    "avsbench-tpavi-r50": {UNUSED_BRANCH: 174, TOP_LATERAL: 4},
    "avsbench-tpavi-pvt2": {TOP_LATERAL: 4},
    "avsegformer-r50": {UNUSED_BRANCH: 174, DEAD_HEAD: 11},
    "avsegformer-pvt2": {DEAD_HEAD: 11},
    "avsbench-robust-avsegformer": {DEAD_HEAD: 11},
}
#: A few renames worth pinning down (ours <- published), beyond the bulk checks.
SAMPLES = {
    "avsbench-tpavi-r50": {
        "backbone.layer3.5.conv2.weight": "resnet.layer3_1.5.conv2.weight",
        "encoder_conv.3.convs.2.bias": "conv4.conv2d_list.2.bias",
        "decoder.blocks.3.out.conv1.weight": "path4.resConfUnit2.conv1.weight",
        "decoder.blocks.0.lateral.conv2.bias": "path1.resConfUnit1.conv2.bias",
        "decoder.head_mid.weight": "output_conv.2.weight",
        "tpavi.0.phi.weight": "tpavi_b1.phi.weight",
        "tpavi.3.W_z.1.running_var": "tpavi_b4.W_z.1.running_var",
        "tpavi.2.norm.weight": "tpavi_b3.norm_layer.weight",
        "audio_encoder.embeddings.4.weight": "(vggish) embeddings.4.weight",
    },
    "avsbench-tpavi-pvt2": {
        "backbone.patch_embed.proj.weight": "encoder_backbone.patch_embed1.proj.weight",
        "backbone.stages.3.downsample.norm.bias": "encoder_backbone.patch_embed4.norm.bias",
        "backbone.stages.2.blocks.39.mlp.dwconv.weight": (
            "encoder_backbone.block3.39.mlp.dwconv.dwconv.weight"
        ),
        "backbone.stages.1.norm.weight": "encoder_backbone.norm2.weight",
        "tpavi.1.g.weight": "tpavi_b2.g.weight",
    },
    "avsegformer-r50": {
        "backbone.layer4.2.bn3.running_mean": "backbone.layer4_1.2.bn3.running_mean",
        "head.fc.conv_out.weight": "head.fc.4.weight",
        "head.transformer.encoder.layers.5.self_attn.sampling_offsets.bias": (
            "head.transformer.encoder.layers.5.self_attn.sampling_offsets.bias"
        ),
        "audio_encoder.features.0.weight": "vggish.features.0.weight",
    },
    "avsegformer-pvt2": {
        "head.query_generator.layers.5.ffn.2.weight": ("head.query_generator.layers.5.ffn.2.weight")
    },
    "avsbench-robust-avsegformer": {"classifier.audio_proj.weight": "cosine_sim.audio_proj.weight"},
}


def _value(t: torch.Tensor) -> float:
    return float(t.detach().reshape(-1)[0]) if t.numel() else float("nan")


def test_facts_cover_every_format() -> None:
    assert set(FACTS) == set(FORMAT_NAMES)
    assert len(FACTS["avsbench-tpavi-r50"]["checkpoint"]) == 630  # as the issue counted
    assert len(FACTS["avsbench-tpavi-r50"]["vggish"]) == 18


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_conversion_uses_or_drops_every_published_key(fmt: str) -> None:
    state = published_state(fmt)
    vggish = published_state(fmt, "vggish") if FORMATS[fmt].external_vggish else None
    conv = convert_state_dict(fmt, state, vggish)
    with torch.device("meta"):
        model = build_model(conv.model_cfg, load_pretrained=False)
    want = model.state_dict()
    assert list(conv.state) == list(want)  # every model key, in the model's order
    for key, t in conv.state.items():
        assert tuple(t.shape) == tuple(want[key].shape), key
    # each model tensor carries the constant of exactly one published tensor
    source = {_value(t): k for k, t in state.items()}
    source.update({_value(t): f"(vggish) {k}" for k, t in (vggish or {}).items()})
    used = [source[_value(t)] for t in conv.state.values()]
    assert len(set(used)) == len(used)
    n_published = len(state) + len(vggish or {})
    assert len(used) + sum(conv.dropped.values()) == n_published
    assert conv.dropped == DROPPED[fmt]
    mapped = dict(zip(conv.state, used, strict=True))
    for ours, theirs in SAMPLES[fmt].items():
        assert mapped[ours] == theirs
    assert conv.image_size == (224 if fmt.startswith("avsbench-tpavi") else 512)


def test_inferred_model_configs() -> None:
    tpavi = convert_state_dict(
        "avsbench-tpavi-r50",
        published_state("avsbench-tpavi-r50"),
        published_state("avsbench-tpavi-r50", "vggish"),
    )
    assert tpavi.model_cfg == {
        "name": "tpavi",
        "backbone": "resnet50",
        "classifier": False,
        "tpavi_stages": [0, 1, 2, 3],
        "channels": 256,
        "num_frames": 5,
    }
    seg = convert_state_dict(
        "avsbench-robust-avsegformer", published_state("avsbench-robust-avsegformer")
    )
    assert seg.model_cfg == {
        "name": "avsegformer",
        "backbone": "pvt_v2_b5",
        "robust": True,
        "embed_dim": 256,
        "num_queries": 300,
        "ffn_dim": 2048,
        "layers": 6,
        "num_frames": 5,
    }


def test_tpavi_stage_subset_is_read_from_the_keys() -> None:
    state = {
        k: v
        for k, v in published_state("avsbench-tpavi-r50").items()
        if not k.startswith(("tpavi_b1.", "tpavi_b3."))
    }
    conv = convert_state_dict(
        "avsbench-tpavi-r50", state, published_state("avsbench-tpavi-r50", "vggish")
    )
    assert conv.model_cfg["tpavi_stages"] == [1, 3]
    assert not any(k.startswith(("tpavi.0.", "tpavi.2.")) for k in conv.state)


def test_phi_and_w_z_become_linear_and_conv2d_weights() -> None:
    state = published_state("avsbench-tpavi-r50")
    state["tpavi_b2.phi.weight"] = torch.randn(128, 256, 1, 1, 1)
    state["tpavi_b2.W_z.0.weight"] = torch.randn(256, 128, 1, 1, 1)
    conv = convert_state_dict(
        "avsbench-tpavi-r50", state, published_state("avsbench-tpavi-r50", "vggish")
    )
    assert torch.equal(
        conv.state["tpavi.1.phi.weight"], state["tpavi_b2.phi.weight"][:, :, 0, 0, 0]
    )
    assert torch.equal(conv.state["tpavi.1.W_z.0.weight"], state["tpavi_b2.W_z.0.weight"][:, :, 0])


def test_pvt_keys_of_the_published_models_are_timms_after_renaming() -> None:
    pub = {
        k[len("encoder_backbone.") :]: shape
        for k, shape, _ in FACTS["avsbench-tpavi-pvt2"]["checkpoint"]
        if k.startswith("encoder_backbone.")
    }
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in PVTv2Features().state_dict().items()}
    assert {pvt_original_to_timm(k): s for k, s in pub.items()} == ours
    from timm.models.pvt_v2 import checkpoint_filter_fn

    assert set(checkpoint_filter_fn(dict.fromkeys(pub), None)) == set(ours)


# ----------------------------------------------------------------------------- errors
def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("actual", "given"),
    [
        ("avsegformer-pvt2", "avsbench-robust-avsegformer"),  # classifier keys missing
        ("avsbench-robust-avsegformer", "avsegformer-pvt2"),  # cosine_sim keys left over
        ("avsegformer-r50", "avsbench-tpavi-r50"),
        ("avsbench-tpavi-pvt2", "avsbench-tpavi-r50"),
    ],
)
def test_wrong_format_lists_the_keys_and_names_the_right_one(tmp_path, actual, given) -> None:
    ckpt = _save(published_state(actual), tmp_path / "published.pth")
    vgg = _save(published_state("avsbench-tpavi-r50", "vggish"), tmp_path / "vggish.pth")
    out = tmp_path / "out.pt"
    with pytest.raises(InputError) as err:
        import_checkpoint(given, ckpt, out, vgg if FORMATS[given].external_vggish else None)
    msg = str(err.value)
    assert msg.startswith(f"{ckpt}: not a {given} checkpoint")
    assert "a wrong --format is the usual mistake" in msg
    assert f"the file fits --format {actual}" in msg
    assert "missing" in msg or "fit no rule" in msg
    if given == "avsbench-robust-avsegformer":
        assert "classifier.audio_proj.weight" in msg
    if actual == "avsbench-robust-avsegformer":
        assert "cosine_sim.audio_proj.weight" in msg
    assert not out.exists()


def test_unmatched_missing_and_misshapen_keys_are_listed() -> None:
    state = published_state("avsegformer-r50")
    del state["head.mlp.layers.1.bias"]
    state["head.extra_branch.weight"] = torch.zeros(3)
    state["audio_proj.weight"] = torch.zeros(256, 64)
    with pytest.raises(FormatMismatch) as err:
        convert_state_dict("avsegformer-r50", state)
    e = err.value
    assert e.unmatched == ["head.extra_branch.weight"]
    assert e.missing == ["head.mlp.layers.1.bias"]
    assert e.shapes == ["audio_proj.weight: file (256, 64), model (256, 128)"]
    assert "1 key(s) the model needs are missing: head.mlp.layers.1.bias" in str(e)


def test_a_key_no_rule_knows_is_an_error_not_dropped() -> None:
    state = published_state("avsegformer-pvt2")
    state["vggish.pproc.pca_means"] = torch.zeros(128, 1)  # a PCA-postprocessed VGGish
    with pytest.raises(FormatMismatch, match="fit no rule: vggish.pproc.pca_means"):
        convert_state_dict("avsegformer-pvt2", state)
    assert fitting_formats(state) == []


def test_vggish_file_required_for_avsbench_and_refused_for_avsegformer(tmp_path) -> None:
    ckpt = _save(published_state("avsbench-tpavi-r50"), tmp_path / "tpavi.pth")
    with pytest.raises(InputError, match="keeps VGGish outside its checkpoint"):
        import_checkpoint("avsbench-tpavi-r50", ckpt, tmp_path / "o.pt")
    seg = _save(published_state("avsegformer-r50"), tmp_path / "seg.pth")
    vgg = _save(published_state("avsbench-tpavi-r50", "vggish"), tmp_path / "vggish.pth")
    with pytest.raises(InputError, match="holds its own VGGish weights") as err:
        import_checkpoint("avsegformer-r50", seg, tmp_path / "o.pt", vgg)
    assert err.value.where == str(vgg)
    bad_vgg = _save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a torchvggish VGGish state dict") as err:
        import_checkpoint("avsbench-tpavi-r50", ckpt, tmp_path / "o.pt", bad_vgg)
    assert err.value.where == str(bad_vgg) and "missing: audio_encoder" in str(err.value)


# ----------------------------------------------------------------------------- end to end
def test_cli_writes_a_checkpoint_that_evaluate_loads(tmp_path, capsys) -> None:
    from avsrobust.evaluate import load_checkpoint

    ckpt = _save(published_state("avsbench-tpavi-r50", scale=1e-5), tmp_path / "S4_best.pth")
    vgg = _save(published_state("avsbench-tpavi-r50", "vggish", scale=1e-5), tmp_path / "v.pth")
    out = tmp_path / "imported" / "tpavi.pt"
    args = ["--format", "avsbench-tpavi-r50", "--checkpoint", str(ckpt), "--vggish", str(vgg)]
    assert main([*args, "--out", str(out)]) == 0
    assert "dropped 174 (B2_ResNet" in capsys.readouterr().out
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ck) == {"model", "cfg"}
    cfg = ck["cfg"]
    assert cfg["image_size"] == 224 and cfg["amp"] is False and cfg["gate_with_classifier"] is False
    assert cfg["imported"]["format"] == "avsbench-tpavi-r50"
    assert cfg["imported"]["checkpoint"] == str(ckpt)
    assert len(cfg["imported"]["checkpoint_sha256"]) == 64
    model, cfg2 = load_checkpoint(out, torch.device("cpu"))
    assert {k: cfg2[k] for k in cfg} == cfg  # the loaded config is resolved over the defaults
    src = published_state("avsbench-tpavi-r50", scale=1e-5)
    assert _value(model.tpavi["0"].theta.weight) == pytest.approx(
        _value(src["tpavi_b1.theta.weight"])
    )
    with torch.no_grad():
        logits = model(torch.randn(5, 3, 64, 64), torch.randn(5, 1, 96, 64))["logits"]
    assert logits.shape == (5, 1, 64, 64)
    # a wrong format on the command line: exit 1 and one line naming the right format
    assert main(["--format", "avsegformer-r50", "--checkpoint", str(ckpt), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fits --format avsbench-tpavi-r50" in err


def test_image_size_override_and_bad_files(tmp_path) -> None:
    ckpt = _save(published_state("avsegformer-r50"), tmp_path / "seg.pth")
    cfg = import_checkpoint("avsegformer-r50", ckpt, tmp_path / "o.pt", image_size=224)
    assert cfg["image_size"] == 224
    with pytest.raises(InputError, match="image size"):
        import_checkpoint("avsegformer-r50", ckpt, tmp_path / "o.pt", image_size=7)
    with pytest.raises(InputError, match="unknown --format"):
        import_checkpoint("avsegformer", ckpt, tmp_path / "o.pt")
    with pytest.raises(InputError, match="weight file not found"):
        import_checkpoint("avsegformer-r50", tmp_path / "nope.pth", tmp_path / "o.pt")
