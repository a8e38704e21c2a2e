"""Models and weight loading: shapes, gradients, audio dependence, weight files, learning.

Everything runs on CPU at 64 px with B=1, T=5 (tpavi: one forward + backward per
test); the bf16/channels_last check at 224 px needs CUDA and is marked ``gpu``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from avsrobust.errors import ConfigError, InputError
from avsrobust.hashing import sha256_file
from avsrobust.models import TPAVI, VGGish, build_model, count_parameters
from avsrobust.weights import load_resnet50, load_vggish

T = 5


pytestmark = pytest.mark.usefixtures("few_threads")  # 1 thread: the machine has 2 shared cores


def _inputs(n: int = T, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, size, size), torch.randn(n, 1, 96, 64)


def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


# ----------------------------------------------------------------------------- tpavi


def test_tpavi_all_stages_classifier_trainable_audio() -> None:
    model = build_model({"name": "tpavi", "classifier": True, "freeze_audio": False})
    frames, audio = _inputs()
    out = model(frames, audio)
    assert out["logits"].shape == (T, 1, 64, 64)
    assert out["sounding"].shape == (T,)
    assert len(out["av_pairs"]) == 4
    for (visual, aud), stride in zip(out["av_pairs"], (4, 8, 16, 32), strict=True):
        assert visual.shape == (T, 256, 64 // stride, 64 // stride)
        assert aud.shape == (T, 256)
    (out["logits"].mean() + out["sounding"].mean()).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    # trainable audio: gradient reaches the first VGGish conv (via the classifier)
    assert model.audio_encoder.features[0].weight.grad.abs().sum() > 0


def test_tpavi_stage_subset_frozen_audio_no_classifier() -> None:
    model = build_model({"name": "tpavi", "tpavi_stages": [1, 3], "channels": 64})
    assert set(model.tpavi) == {"1", "3"}
    frames, audio = _inputs()
    out = model(frames, audio)
    assert out["logits"].shape == (T, 1, 64, 64)
    assert "sounding" not in out
    assert [v.shape[-1] for v, _ in out["av_pairs"]] == [8, 2]
    # the TPAVI output path starts as identity (zero-init W_z BN), so push a
    # gradient through it explicitly: its audio projection must receive one
    (out["logits"].mean() + sum(v.mean() for v, _ in out["av_pairs"])).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.tpavi["3"].align.weight.grad is not None
    assert all(not p.requires_grad for p in model.audio_encoder.parameters())
    assert all(g is None for g in _grads(model.audio_encoder))
    assert count_parameters(model, trainable_only=True) < count_parameters(model) - 72_000_000


def test_tpavi_attention_matches_quadratic_reference() -> None:
    """The O(N C^2) evaluation equals AVSBench's literal [THW x THW] affinity form."""
    block = TPAVI(channels=8, audio_dim=16)
    nn.init.normal_(block.W_z[1].weight)  # make the attention branch non-zero
    block.eval()
    x, a = torch.randn(2 * 3, 8, 3, 4), torch.randn(2 * 3, 16)
    fast, aligned = block(x, a, num_frames=3)
    assert aligned.shape == (6, 8)
    torch.testing.assert_close(fast, block.reference_forward(x, a, num_frames=3))


def test_vggish_shape() -> None:
    assert VGGish()(torch.randn(2, 1, 96, 64)).shape == (2, 128)


# ----------------------------------------------------------------------------- config


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="valid names: tpavi, avsegformer, small"):
        build_model({"name": "resnet"})
    with pytest.raises(ConfigError, match="'tpavi_stage'"):
        build_model({"name": "tpavi", "tpavi_stage": [0]})
    with pytest.raises(ConfigError, match="tpavi_stages"):
        build_model({"name": "tpavi", "tpavi_stages": [4]})
    with pytest.raises(ConfigError, match="classifier"):
        build_model({"name": "small", "classifier": "yes"})
    with pytest.raises(ConfigError, match="'resnet50_weights'"):
        build_model({"name": "small", "resnet50_weights": ""})
    model = build_model({"name": "small", "num_frames": T})
    with pytest.raises(ValueError, match="audio must be"):
        model(torch.randn(T, 3, 32, 32), torch.randn(T, 1, 64, 96))
    with pytest.raises(ValueError, match="multiple of num_frames"):
        model(torch.randn(4, 3, 32, 32), torch.randn(4, 1, 96, 64))


# ----------------------------------------------------------------------------- small


@pytest.mark.parametrize("classifier", [False, True])
def test_small_shapes_and_gradients(classifier: bool) -> None:
    model = build_model({"name": "small", "classifier": classifier})
    frames, audio = _inputs(2 * T, 72)
    out = model(frames, audio)
    assert out["logits"].shape == (2 * T, 1, 72, 72)
    assert ("sounding" in out) == classifier
    if classifier:
        assert out["sounding"].shape == (2 * T,)
    (visual, aud) = out["av_pairs"][0]
    assert visual.shape == (2 * T, 64, 72 // 16 + 1, 72 // 16 + 1) and aud.shape == (2 * T, 64)
    out["logits"].mean().backward()
    assert model.stages[0][0][0].weight.grad.abs().sum() > 0
    assert model.audio_encoder[0].weight.grad.abs().sum() > 0


def test_small_match_map_and_gate() -> None:
    """The match map (stride 8), its in-batch cross map, and the gate it puts on the mask."""
    model = build_model({"name": "small", "classifier": True})
    frames, audio = _inputs(3 * T, 64)
    out = model(frames, audio)
    assert out["match"].shape == (3 * T, 1, 8, 8)
    assert out["match_cross"].shape == (3 * T, 3, 8, 8)
    own = out["match_cross"][torch.arange(3 * T), torch.arange(3 * T) // T]
    assert torch.allclose(own, out["match"][:, 0])
    assert torch.equal(out["sounding"], out["match"].flatten(1).amax(1))
    # the cross map of video 0's frames against video 2's audio is what video 0 would
    # get with video 2's sound (eval mode: batch norm independent of the batch)
    model.eval()
    with torch.no_grad():
        out = model(frames, audio)
        swapped = audio.clone()
        swapped[:T] = audio[2 * T :]
        alone = model(frames, swapped)
    assert torch.allclose(out["match_cross"][:T, 2], alone["match"][:T, 0], atol=1e-5)
    # no region matches the sound -> an empty mask, whatever the segmenter paints
    with torch.no_grad():
        model.match_bias.fill_(-50.0)
        gated = model(frames, audio)
    assert (gated["logits"] < -20).all() and (gated["seg_logits"] > -20).any()
    unmatched = build_model({"name": "small", "classifier": True, "match": False})
    plain = unmatched(frames, audio)
    assert "match" not in plain and plain["sounding"].shape == (3 * T,)


def test_small_frozen_audio() -> None:
    model = build_model({"name": "small", "freeze_audio": True})
    model(*_inputs())["logits"].mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.audio_encoder.parameters())


def test_small_audio_matters() -> None:
    model = build_model({"name": "small"}).eval()
    frames, audio = _inputs()
    with torch.no_grad():
        loud = model(frames, audio)["logits"]
        silent = model(frames, torch.full_like(audio, -4.6))["logits"]
    assert (loud - silent).abs().max() > 1e-3


def test_small_learns_to_ignore_silent_objects() -> None:
    """50 Adam steps on 8 samples halve the BCE and separate sounding from silent squares."""
    torch.manual_seed(1)
    n, size = 8, 64
    frames = torch.randn(n, 3, size, size) * 0.1
    masks = torch.zeros(n, 1, size, size)
    audio = torch.full((n, 1, 96, 64), -4.6)  # log(0 + 0.01): silence
    sounding = torch.tensor([i % 2 == 0 for i in range(n)])
    for i in range(n):
        y, x = 8 + 4 * (i % 4), 8 + 5 * (i // 2)
        frames[i, :, y : y + 24, x : x + 24] += 1.5  # an object is always visible
        if sounding[i]:
            masks[i, :, y : y + 24, x : x + 24] = 1.0
            audio[i] = torch.randn(1, 96, 64) + 2.0
    model = build_model({"name": "small", "num_frames": 1})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = nn.functional.binary_cross_entropy_with_logits(model(frames, audio)["logits"], masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(frames, audio)["logits"])
    on_object = (frames.mean(1, keepdim=True) > 0.75).float()
    mean_on = (prob * on_object).sum((1, 2, 3)) / on_object.sum((1, 2, 3))
    assert mean_on[sounding].min() > mean_on[~sounding].max(), mean_on


# ----------------------------------------------------------------------------- weight files


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A torchvision-format ResNet-50 state dict (with fc.* and num_batches_tracked)."""
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("w") / "resnet50-test.pth"
    torch.save(state, path)
    return path, state


def _tpavi_backbone() -> nn.Module:
    backbone = torchvision.models.resnet50(weights=None)
    backbone.fc = nn.Identity()
    return backbone


def test_load_resnet50_values(resnet_file: tuple[Path, dict]) -> None:
    path, state = resnet_file
    backbone = _tpavi_backbone()
    load_resnet50(backbone, path, sha256=sha256_file(path)[:8])
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_load_resnet50_errors(resnet_file: tuple[Path, dict], tmp_path: Path) -> None:
    path, state = resnet_file
    backbone = _tpavi_backbone()
    with pytest.raises(InputError, match="not found"):
        load_resnet50(backbone, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match="not a readable torch file"):
        load_resnet50(backbone, garbage)
    actual = sha256_file(path)
    with pytest.raises(InputError, match=f"expected {'0' * 64}, actual {actual}"):
        load_resnet50(backbone, path, sha256="0" * 64)

    renamed = dict(state)
    renamed["layer1.0.conv1.weightX"] = renamed.pop("layer1.0.conv1.weight")
    bad_key = tmp_path / "bad_key.pth"
    torch.save(renamed, bad_key)
    with pytest.raises(InputError, match=r"missing keys: layer1\.0\.conv1\.weight.*unexpected"):
        load_resnet50(backbone, bad_key)

    reshaped = dict(state)
    reshaped["layer2.0.conv2.weight"] = torch.zeros(3, 3)
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save(reshaped, bad_shape)
    with pytest.raises(InputError, match=r"layer2\.0\.conv2\.weight: file has \(3, 3\)"):
        load_resnet50(backbone, bad_shape)


class _Payload:
    """An object whose unpickling would run code (creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def _touch(marker: str) -> None:
    Path(marker).touch()


def test_pickled_object_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, evil)
    with pytest.raises(InputError, match="weights_only"):
        load_resnet50(_tpavi_backbone(), evil)
    assert not marker.exists()


def test_load_vggish_torchvggish_keys(tmp_path: Path) -> None:
    source = VGGish()
    state = source.state_dict()
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    expected |= {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    assert set(state) == expected  # the torchvggish vggish-10086976.pth key set
    path = tmp_path / "vggish-test.pth"
    torch.save(state, path)
    audio = VGGish()
    load_vggish(audio, path)
    for key, value in audio.state_dict().items():
        assert torch.equal(value, state[key]), key
    state["embeddings.4.weight"] = torch.zeros(128, 10)
    torch.save(state, path)
    with pytest.raises(InputError, match=r"embeddings\.4\.weight"):
        load_vggish(VGGish(), path)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tpavi_bf16_channels_last_cuda() -> None:
    model = build_model({"name": "tpavi", "classifier": True}).cuda()
    model = model.to(memory_format=torch.channels_last)
    frames = torch.randn(2 * T, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    audio = torch.randn(2 * T, 1, 96, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(frames, audio)
        loss = out["logits"].float().mean() + out["sounding"].float().mean()
    loss.backward()
    assert out["logits"].shape == (2 * T, 1, 224, 224)
    assert torch.isfinite(loss)
    assert model.backbone.conv1.weight.grad is not None
    assert torch.isfinite(model.backbone.conv1.weight.grad).all()


# ----------------------------------------------------------------------------- bilinear resize


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("src", "dst"), [((3, 5), (7, 9)), ((7, 7), (28, 28)), ((9, 6), (4, 11))])
def test_deterministic_bilinear_gradient_matches_interpolate(channels_last, src, dst) -> None:
    """The matmul backward equals autograd through F.interpolate (float64, any sizes)."""
    from avsrobust.models import _DeterministicBilinear

    x = torch.randn(2, 3, *src, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 3, *dst, dtype=torch.float64)
    if channels_last:
        g = g.contiguous(memory_format=torch.channels_last)
    a = x.clone().requires_grad_(True)
    ref = torch.nn.functional.interpolate(a, size=dst, mode="bilinear", align_corners=False)
    ref.backward(g)
    b = x.clone().requires_grad_(True)
    out = _DeterministicBilinear.apply(b, dst)
    out.backward(g)
    assert torch.equal(out, ref)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)
    assert b.grad.shape == x.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resize_bilinear_deterministic_cuda() -> None:
    """On CUDA in deterministic mode: native values, gradient close to the native kernel's."""
    from avsrobust.models import resize_bilinear

    x = torch.randn(4, 64, 14, 14, device="cuda").contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 64, 56, 56, device="cuda").contiguous(memory_format=torch.channels_last)
    a = x.clone().requires_grad_(True)
    ref = torch.nn.functional.interpolate(a, size=(56, 56), mode="bilinear", align_corners=False)
    ref.backward(g)
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        grads = []
        for _ in range(2):
            b = x.clone().requires_grad_(True)
            out = resize_bilinear(b, (56, 56))
            out.backward(g)
            grads.append(b.grad)
    finally:
        torch.use_deterministic_algorithms(old)
    assert torch.equal(out, ref)
    assert torch.equal(grads[0], grads[1])  # deterministic
    torch.testing.assert_close(grads[0], a.grad, rtol=1e-4, atol=1e-4)
