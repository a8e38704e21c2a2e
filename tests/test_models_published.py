"""The published networks (TPAVI, AVSegFormer and its robust variant), their parts and losses.

CPU-sized: 64 px, T = 5, AVSegFormer at width 32 with 8 queries and 1 layer, PVT-v2-b5 with one
block per stage (the real depth is checked key by key in test_published.py). Equality with the
published forward passes is benchmarks/published_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avsrobust import train as T
from avsrobust.errors import ConfigError, InputError
from avsrobust.losses import dice_loss, loss_weights, mix_loss, total_loss
from avsrobust.models import backbones, build_model
from avsrobust.models.msdeform import MSDeformAttn, ms_deform_attn
from avsrobust.models.resize import _DeterministicBilinear
from avsrobust.models.tpavi import DPTDecoder, ResidualUnit
from avsrobust.weights import load_pvt_v2, pvt_timm_to_original

N = 5
TINY_SEG = {
    "name": "avsegformer",
    "backbone": "resnet50",
    "embed_dim": 32,
    "num_queries": 8,
    "layers": 1,
    "ffn_dim": 64,
}


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture
def tiny_pvt(monkeypatch):
    """PVT-v2-b5's widths and heads with one block per stage (fast; same key pattern)."""
    monkeypatch.setitem(backbones.PVT_V2_B5_ARGS, "depths", (1, 1, 1, 1))


def _inputs(n: int = N, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, size, size), torch.randn(n, 1, 96, 64)


# ----------------------------------------------------------------------------- TPAVI parts
def test_residual_unit_skip_adds_relu_of_its_input() -> None:
    unit = ResidualUnit(4)
    x = torch.randn(2, 4, 5, 5)
    inner = unit.conv2(F.relu(unit.conv1(F.relu(x))))
    torch.testing.assert_close(unit(x), inner + F.relu(x))
    assert not torch.allclose(unit(x), inner + x)  # x has negative entries


def test_decoder_top_block_has_no_lateral_unit_and_head_runs_at_stride_2() -> None:
    dec = DPTDecoder(8)
    assert dec.blocks[3].lateral is None and all(b.lateral is not None for b in dec.blocks[:3])
    seen = []
    dec.head_in.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    feats = [torch.randn(2, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    assert dec(feats, (64, 64)).shape == (2, 1, 64, 64)
    assert seen == [(32, 32)]
    # the published x2 upsampling uses align_corners=True
    x = torch.randn(2, 8, 2, 2)
    out_unit = dec.blocks[3].out
    want = F.interpolate(out_unit(x), scale_factor=2, mode="bilinear", align_corners=True)
    torch.testing.assert_close(dec.blocks[3](x, None, (4, 4)), want)


def test_tpavi_pvt_backbone_and_relu_av_maps(tiny_pvt) -> None:
    model = build_model({"name": "tpavi", "backbone": "pvt_v2_b5", "tpavi_stages": [0, 3]})
    assert [p.convs[0].in_channels for p in model.encoder_conv] == [64, 128, 320, 512]
    frames, audio = _inputs(size=72)  # not a multiple of 32: resizes to the next map
    out = model(frames, audio)
    assert out["logits"].shape == (N, 1, 72, 72)
    assert [v.shape[-1] for v, _ in out["av_pairs"]] == [18, 3]
    assert all((v >= 0).all() for v, _ in out["av_pairs"])  # relu(fused), as published
    out["logits"].mean().backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- PVT weights
def test_pvt_weight_file_in_original_or_timm_layout_loads(tiny_pvt, tmp_path: Path) -> None:
    source = backbones.PVTv2Features().state_dict()
    original = {pvt_timm_to_original(k): v for k, v in source.items()}
    assert "block3.0.mlp.dwconv.dwconv.weight" in original and "norm4.bias" in original
    original["head.weight"] = torch.zeros(1000, 512)  # the release's ImageNet classifier
    original["head.bias"] = torch.zeros(1000)
    for name, state in (("original", original), ("timm", source)):
        path = tmp_path / f"pvt_v2_b5_{name}.pth"
        torch.save(state, path)
        model = build_model({"name": "tpavi", "backbone": "pvt_v2_b5", "pvt_v2_weights": str(path)})
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(value, source[key]), (name, key)
    del original["norm4.weight"]
    torch.save(original, tmp_path / "broken.pth")
    with pytest.raises(InputError, match=r"missing keys: stages\.3\.norm\.weight"):
        load_pvt_v2(backbones.PVTv2Features(), tmp_path / "broken.pth")


# ----------------------------------------------------------------------------- deformable attn
def test_ms_deform_attn_samples_pixel_centres_exactly() -> None:
    shapes = [(3, 4), (2, 2)]
    n, m, d = 2, 2, 3
    value = torch.randn(n, 12 + 4, m, d)
    # one query per pixel of level 1, one point per level, all weight on level 1
    lq = 4
    ys, xs = torch.meshgrid(torch.arange(2), torch.arange(2), indexing="ij")
    centre = torch.stack(((xs.reshape(-1) + 0.5) / 2, (ys.reshape(-1) + 0.5) / 2), -1)
    loc = torch.zeros(n, lq, m, 2, 1, 2)
    loc[:, :, :, 1, 0] = centre[None, :, None]
    weights = torch.zeros(n, lq, m, 2, 1)
    weights[:, :, :, 1] = 1.0
    out = ms_deform_attn(value, shapes, loc, weights)  # [N, Lq, M*D]
    torch.testing.assert_close(out, value[:, 12:].reshape(n, 4, m * d))


def test_ms_deform_attn_module_starts_on_a_ring_and_has_gradients() -> None:
    attn = MSDeformAttn(dim=16, levels=2, heads=4, points=2)
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    torch.testing.assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0]))  # head 0: +x, 1..P
    shapes = [(4, 4), (2, 2)]
    src = torch.randn(2, 20, 16, requires_grad=True)
    ref = torch.rand(1, 20, 2, 2)
    out = attn(src, ref, src, shapes)
    assert out.shape == (2, 20, 16)
    out.square().mean().backward()
    assert src.grad.abs().sum() > 0 and attn.sampling_offsets.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="positions"):
        attn(src, ref, src, [(4, 4)])


# ----------------------------------------------------------------------------- AVSegFormer
@pytest.fixture(scope="module")
def robust_seg() -> nn.Module:
    torch.manual_seed(0)
    return build_model({**TINY_SEG, "robust": True, "freeze_backbone_epochs": 2})


def test_avsegformer_outputs(robust_seg) -> None:
    robust_seg.eval()
    with torch.no_grad():
        out = robust_seg(*_inputs())
    assert out["logits"].shape == (N, 1, 64, 64)
    assert out["mask_feature"].shape == (N, 32, 16, 16)
    assert out["sounding"].shape == (N,) and out["sounding"].abs().max() <= 1.0  # a cosine
    assert out["av_pairs"] == []
    plain = build_model(TINY_SEG)
    assert "sounding" not in plain(*_inputs())


def test_avsegformer_audio_changes_the_mask() -> None:
    model = build_model(TINY_SEG).eval()
    frames, audio = _inputs()
    with torch.no_grad():
        a = model(frames, audio)["logits"]
        b = model(frames, audio + 3.0)["logits"]
    assert (a - b).abs().max() > 1e-4


def test_avsegformer_trains_a_step_with_its_loss_and_a_frozen_backbone(robust_seg) -> None:
    """One optimizer step of the training engine, loss dice+mix + classifier BCE."""
    c = T.resolve_config(
        {
            "model": {**TINY_SEG, "robust": True, "freeze_backbone_epochs": 2},
            "lr": 1e-3,
            "amp": False,
            "loss": {"kind": "dice+mix", "classifier_weight": 1.0},
        }
    )
    model = robust_seg.train()
    model.set_epoch(0)
    opt = T.build_optimizer(model, c, torch.device("cpu"))
    frames, audio = _inputs()
    masks = torch.zeros(N, 1, 64, 64)
    masks[0, :, 16:40, 20:44] = 1.0
    valid = torch.tensor([True, False, False, False, False])  # S4 train: first frame only
    x = {
        "frames": frames,
        "audio": audio,
        "masks": masks,
        "mask_valid": valid,
        "sounding": torch.ones(N),
    }
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    parts = T.train_step(model, opt, x, c, torch.device("cpu"))
    assert all(torch.isfinite(v) for v in parts.values())
    assert parts["bce"] == 0 and parts["iou"] > 0 and parts["mix"] > 0 and parts["sounding"] > 0
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert "head.fc.conv_out.weight" in changed and "classifier.audio_proj.weight" in changed
    assert not any(k.startswith(("backbone.", "audio_encoder.")) for k in changed)
    model.set_epoch(2)  # freeze_backbone_epochs elapsed: the backbone trains
    T.train_step(model, opt, x, c, torch.device("cpu"))
    assert not torch.equal(model.backbone.conv1.weight, before["backbone.conv1.weight"])


def test_avsegformer_config_errors() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_model({**TINY_SEG, "embed_dim": 48})
    with pytest.raises(ConfigError, match="'classifier'"):
        build_model({**TINY_SEG, "classifier": True})  # the robust variant is `robust`
    with pytest.raises(ConfigError, match="backbone must be one of resnet50, pvt_v2_b5"):
        build_model({**TINY_SEG, "backbone": "vit"})
    with pytest.raises(ConfigError, match="valid names: tpavi, avsegformer, small"):
        build_model({"name": "avsformer"})


# ----------------------------------------------------------------------------- losses
def test_dice_loss_is_avsegformers_and_flat_on_empty_targets() -> None:
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    target[2] = 0.0
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    per = 1 - 2 * (p * g).sum(1) / ((p * p).sum(1) + 0.001 + (g * g).sum(1) + 0.001)
    valid = torch.tensor([True, True, False])
    torch.testing.assert_close(dice_loss(logits, target, valid), per[:2].mean())
    empty = dice_loss(logits[2:], target[2:])
    empty.backward()
    assert empty.item() == pytest.approx(1.0) and logits.grad[2].abs().max() == 0


def test_total_loss_dice_mix_reads_the_mask_feature() -> None:
    logits = torch.randn(2, 1, 16, 16)
    feature = torch.randn(2, 8, 4, 4)
    masks = (torch.rand(2, 1, 16, 16) > 0.5).float()
    batch = {"masks": masks, "mask_valid": torch.ones(2, dtype=torch.bool)}
    out = {"logits": logits, "mask_feature": feature, "av_pairs": []}
    loss, parts = total_loss(out, batch, {"loss": {"kind": "dice+mix", "mix_weight": 0.1}})
    want = dice_loss(logits, masks) + 0.1 * mix_loss(feature, masks)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(parts["mix"], mix_loss(feature, masks))
    mean_map = F.interpolate(feature.mean(1, keepdim=True), size=(16, 16), mode="bilinear")
    torch.testing.assert_close(parts["mix"], dice_loss(mean_map, masks))
    # the default kind is unchanged and reports no mix term
    _, default = total_loss(out, batch, {"loss": {}})
    assert "mix" not in default and default["bce"] > 0
    with pytest.raises(ConfigError, match="loss.kind must be one of bce\\+iou, dice\\+mix"):
        loss_weights({"loss": {"kind": "dice"}})


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize(("src", "dst"), [((3, 5), (6, 10)), ((7, 7), (28, 28)), ((1, 4), (2, 8))])
def test_deterministic_bilinear_align_corners_gradient(src, dst) -> None:
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    g = torch.randn(2, 3, *dst, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    ref = F.interpolate(a, size=dst, mode="bilinear", align_corners=True)
    ref.backward(g)
    b = x.clone().requires_grad_(True)
    out = _DeterministicBilinear.apply(b, dst, True)
    out.backward(g)
    assert torch.equal(out, ref)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)
