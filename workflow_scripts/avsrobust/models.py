"""Audio-visual segmentation models behind one interface.

Every model maps

* ``frames`` ``[B*T, 3, H, W]`` float, ImageNet-normalised, T frames per video
  stored consecutively (video 0 frames 0..T-1, video 1 frames 0..T-1, ...), and
* ``audio`` ``[B*T, 1, 96, 64]`` VGGish log-mel examples, one per frame
  (domain.md section 4),

to a dict:

* ``"logits"``: ``[B*T, 1, H, W]`` mask logits at the input resolution;
* ``"sounding"``: ``[B*T]`` logits of "is something sounding in this frame"
  (only when ``cfg["classifier"]`` is true): lets training put gradient on
  negative audio and lets inference gate masks;
* ``"av_pairs"``: list, one entry per audio-visual attention stage (in stage
  order), of ``(visual, audio)`` with ``visual`` the fused feature map
  ``[B*T, C, h, w]`` after attention and ``audio`` the audio embedding projected
  to the same width ``[B*T, C]``. This is what AVSBench's MS3 audio-visual
  matching (KL) loss consumes (its ``v_map_list`` / ``a_fea_list``). Empty list
  when a model has no attention stage.

Models (``build_model(cfg)``):

``tpavi``
    The AVSBench ECCV'22 ResNet-50 baseline, reimplemented: ResNet-50 stages
    (strides 4/8/16/32) each projected to ``channels`` by conv+BN+ReLU, a frozen
    VGGish (128-d), TPAVI attention at ``tpavi_stages``, FPN-style decoder.
``small``
    Same interface, trains in minutes on a laptop CPU at 64-112 px: a few strided
    convs (strides 4/8/16), a log-mel statistics MLP (64-d), FiLM audio modulation
    at every stage and a TPAVI block at the coarsest one. FiLM scales features
    multiplicatively, so the model can switch a visible object off when its
    audio is silent -- the robustness property this project studies.

All modules avoid in-place ops on activations (autocast/bf16 safe) and only use
ops that accept ``channels_last`` inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from avsrobust.errors import ConfigError
from avsrobust.weights import load_resnet50, load_vggish

MODEL_NAMES = ("tpavi", "small")
AUDIO_SHAPE = (1, 96, 64)

_COMMON_DEFAULTS: dict[str, Any] = {
    "name": "tpavi",
    "classifier": False,
    "num_frames": 5,
}
TPAVI_DEFAULTS: dict[str, Any] = {
    **_COMMON_DEFAULTS,
    "tpavi_stages": [0, 1, 2, 3],
    "channels": 256,
    "resnet50_weights": "",
    "resnet50_sha256": None,
    "vggish_weights": "",
    "vggish_sha256": None,
    "freeze_audio": True,
}
SMALL_DEFAULTS: dict[str, Any] = {
    **_COMMON_DEFAULTS,
    "name": "small",
    "channels": 32,
    "widths": [16, 32, 64],
    "audio_dim": 64,
    "attention": True,
    # the small audio MLP has no pretrained weights: it must learn, so not frozen
    "freeze_audio": False,
}


# ----------------------------------------------------------------------------- building blocks


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv + BN + ReLU (no bias: BN has one)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


@functools.lru_cache(maxsize=64)
def _interp_matrix(out_size: int, in_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``A`` [out, in] with ``resize(x)[o] = sum_i A[o, i] x[i]`` along one axis.

    PyTorch's bilinear weights for ``align_corners=False`` and an explicit output size:
    source ``max((o + 0.5) * in / out - 0.5, 0)``, left index its floor, right index one
    more unless at the edge, weights ``1 - frac`` and ``frac``.
    """
    dst = torch.arange(out_size, dtype=torch.float64)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    left = src.floor().long().clamp_max(in_size - 1)
    right = (left + 1).clamp_max(in_size - 1)
    frac = src - left
    a = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    a.index_put_((rows, left), 1.0 - frac, accumulate=True)
    a.index_put_((rows, right), frac, accumulate=True)
    return a.to(device=device, dtype=dtype)


class _DeterministicBilinear(torch.autograd.Function):
    """Bilinear resize: the native CUDA forward, a deterministic matmul backward.

    With ``torch.use_deterministic_algorithms(True)`` ``F.interpolate`` swaps the CUDA
    upsampling kernel for a decomposition whose backward is a deterministic
    ``index_put`` -- measured at ~70% of a tpavi training step on an H100. The gradient of
    a separable resize is ``A_h^T g A_w``: two matmuls, deterministic and fast.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: tuple[int, int]) -> Tensor:
        ctx.in_size = (x.shape[-2], x.shape[-1])
        return torch.ops.aten.upsample_bilinear2d.default(x, list(size), False)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        h, w = ctx.in_size
        n, c, big_h, big_w = g.shape
        ah = _interp_matrix(big_h, h, g.device, g.dtype)  # [H, h]
        aw = _interp_matrix(big_w, w, g.device, g.dtype)  # [W, w]
        if g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous():
            rows = g.permute(0, 2, 3, 1).reshape(n * big_h, big_w, c)  # NHWC, no copy
            t = torch.matmul(aw.t(), rows)  # [N*H, w, C]
            gi = torch.matmul(ah.t(), t.reshape(n, big_h, w * c))  # [N, h, w*C]
            return gi.reshape(n, h, w, c).permute(0, 3, 1, 2), None  # channels-last
        t = torch.matmul(g.contiguous().reshape(n * c * big_h, big_w), aw)  # [N*C*H, w]
        gi = torch.matmul(ah.t(), t.reshape(n * c, big_h, w))  # [N*C, h, w]
        return gi.reshape(n, c, h, w), None


def resize_bilinear(x: Tensor, size: tuple[int, int] | Sequence[int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)``, fast when deterministic.

    Same values; on CUDA in deterministic mode (not compiled) the native kernel computes
    them and :class:`_DeterministicBilinear` the gradient, instead of PyTorch's slow
    deterministic fallback.
    """
    size = (int(size[0]), int(size[1]))
    if (
        x.is_cuda
        and torch.are_deterministic_algorithms_enabled()
        and not torch.compiler.is_compiling()
    ):
        return _DeterministicBilinear.apply(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class VGGish(nn.Module):
    """VGGish audio encoder in the torchvggish module layout.

    The attribute names and Sequential indices match torchvggish's ``VGG`` so that
    ``vggish-10086976.pth`` loads key for key: ``features.{0,3,6,8,11,13}`` convs,
    ``embeddings.{0,2,4}`` linears. Input ``[N, 1, 96, 64]`` (time x mel) ->
    ``[N, 128]``. Before flattening, the feature map is put in (H, W, C) order as
    torchvggish does, because the released weights were converted from
    TensorFlow (NHWC); flattening NCHW would scramble the first linear layer.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, 128),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten, as torchvggish
        return self.embeddings(x)


class TPAVI(nn.Module):
    """Temporal pixel-wise audio-visual interaction (AVSBench TPAVI, "dot" mode).

    For one video with visual features ``x`` ``[T, C, H, W]`` and audio
    embeddings ``a`` ``[T, A]``: the audio is aligned to ``C`` (``align``), and
    broadcast over H, W; ``theta`` (visual), ``phi`` (audio) and ``g`` (visual)
    are 1x1 projections to ``C/2``; the affinity between every visual position
    (t, h, w) and every audio position (t', h', w') is ``theta . phi / N`` with
    ``N = T*H*W``; the attended values are projected back (``W_z`` conv + BN,
    zero-initialised so the block starts as identity), added to ``x`` and
    LayerNorm'ed over channels.

    Because "dot" mode has no softmax, ``(theta phi^T / N) g`` equals
    ``theta (phi^T g) / N``; and since ``phi`` is constant over (h', w') of a
    frame, ``phi^T g = sum_t' phi(a_t') (sum_{h',w'} g_t')``. Computing it in that
    order gives exactly AVSBench's result with O(N C^2) work and memory instead
    of the O(N^2) affinity matrix (at 224 px, stride 4 and T=5 that matrix is
    15680^2 floats = 1 GB per video). ``reference_forward`` keeps the quadratic
    form for tests.
    """

    def __init__(self, channels: int, audio_dim: int) -> None:
        super().__init__()
        inter = max(channels // 2, 1)
        self.channels, self.inter = channels, inter
        self.align = nn.Linear(audio_dim, channels)
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        # a 1x1 conv on the H,W-broadcast audio is a linear map of the audio vector
        self.phi = nn.Linear(channels, inter)
        self.W_z = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W_z[1].weight)
        nn.init.zeros_(self.W_z[1].bias)
        self.norm = nn.LayerNorm(channels)

    def _finish(self, x: Tensor, y: Tensor) -> Tensor:
        z = self.W_z(y) + x
        return self.norm(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: Tensor, audio: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
        """``x`` [B*T, C, H, W], ``audio`` [B*T, A] -> (fused map, aligned audio [B*T, C])."""
        n, c, h, w = x.shape
        b, t = n // num_frames, num_frames
        a = self.align(audio)  # [B*T, C]
        phi = self.phi(a).reshape(b, t, self.inter)  # [B, T, C']
        g_sum = self.g(x).sum(dim=(2, 3)).reshape(b, t, self.inter)  # [B, T, C']
        context = torch.einsum("btk,btc->bkc", phi, g_sum) / float(t * h * w)  # [B, C', C']
        theta = self.theta(x).reshape(b, t, self.inter, h, w)
        y = torch.einsum("btkhw,bkc->btchw", theta, context).reshape(n, self.inter, h, w)
        return self._finish(x, y), a

    def reference_forward(self, x: Tensor, audio: Tensor, num_frames: int) -> Tensor:
        """The literal AVSBench computation with the [B, THW, THW] affinity (tests only)."""
        n, c, h, w = x.shape
        b, t = n // num_frames, num_frames
        a = self.align(audio)
        a_map = a[:, :, None, None].expand(n, c, h, w)
        phi = self.phi(a_map.permute(0, 2, 3, 1))  # [B*T, H, W, C']
        phi = phi.reshape(b, t * h * w, self.inter)
        theta = self.theta(x).reshape(b, t, self.inter, h * w).permute(0, 1, 3, 2)
        theta = theta.reshape(b, t * h * w, self.inter)
        g = self.g(x).reshape(b, t, self.inter, h * w).permute(0, 1, 3, 2)
        g = g.reshape(b, t * h * w, self.inter)
        f = theta @ phi.transpose(1, 2) / float(t * h * w)
        y = (f @ g).reshape(b, t, h, w, self.inter).permute(0, 1, 4, 2, 3)
        return self._finish(x, y.reshape(n, self.inter, h, w))


class FusionBlock(nn.Module):
    """One top-down FPN step: refine the lateral input, add the upsampled coarser path."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lateral = ResidualConvUnit(channels)
        self.out = ResidualConvUnit(channels)

    def forward(self, lateral: Tensor, coarser: Tensor | None) -> Tensor:
        x = self.lateral(lateral)
        if coarser is not None:
            x = x + resize_bilinear(coarser, (x.shape[-2], x.shape[-1]))
        return self.out(x)


class ResidualConvUnit(nn.Module):
    """ReLU-conv-ReLU-conv + skip, as in AVSBench's (DPT-style) decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FPNDecoder(nn.Module):
    """Top-down decoder over ``len(levels)`` maps of equal width -> 1-channel logits.

    Mirrors AVSBench's ``path4 -> path1`` fusion chain followed by its output
    head (conv -> upsample -> conv-ReLU-conv to one channel), upsampling to the
    exact input size so odd sizes work.
    """

    def __init__(self, channels: int, levels: int, head_mid: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FusionBlock(channels) for _ in range(levels))
        self.head_in = nn.Conv2d(channels, head_mid, 3, padding=1)
        self.head_out = nn.Sequential(
            nn.Conv2d(head_mid, max(head_mid // 4, 8), 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(max(head_mid // 4, 8), 1, 1),
        )

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        path: Tensor | None = None
        for block, feat in zip(reversed(self.blocks), reversed(feats), strict=True):
            path = block(feat, path)
        assert path is not None
        x = self.head_in(path)
        x = resize_bilinear(x, size)
        return self.head_out(x)


class SoundingHead(nn.Module):
    """ "Is something sounding": pooled fused visual feature + audio embedding -> 1 logit.

    Sees both modalities because "sounding *and visible*" is what masks need; an
    audio-only head could not tell off-screen sound from on-screen sound.
    """

    def __init__(self, visual_dim: int, audio_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(visual_dim + audio_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        pooled = visual.mean(dim=(2, 3))
        return self.mlp(torch.cat([pooled, audio.to(pooled.dtype)], dim=1)).squeeze(1)


def _check_inputs(frames: Tensor, audio: Tensor, num_frames: int) -> None:
    """Fail with the offending shape rather than deep inside a conv or reshape."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [B*T, 3, H, W], got {tuple(frames.shape)}")
    if tuple(audio.shape[1:]) != AUDIO_SHAPE or audio.shape[0] != frames.shape[0]:
        raise ValueError(
            f"audio must be [B*T, 1, 96, 64] with B*T = {frames.shape[0]} (one example per "
            f"frame), got {tuple(audio.shape)}"
        )
    if frames.shape[0] % num_frames:
        raise ValueError(
            f"B*T = {frames.shape[0]} frames is not a multiple of num_frames = {num_frames}"
        )


# ----------------------------------------------------------------------------- models


class TPAVIModel(nn.Module):
    """AVSBench ResNet-50 + VGGish + TPAVI + FPN baseline (see module docstring)."""

    STAGE_CHANNELS = (256, 512, 1024, 2048)

    def __init__(
        self,
        channels: int = 256,
        tpavi_stages: Sequence[int] = (0, 1, 2, 3),
        classifier: bool = False,
        freeze_audio: bool = True,
        num_frames: int = 5,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.tpavi_stages = tuple(sorted(tpavi_stages))
        self.freeze_audio = freeze_audio
        backbone = torchvision.models.resnet50(weights=None)
        backbone.fc = nn.Identity()  # unused ImageNet classifier; its weights are skipped on load
        self.backbone = backbone
        self.audio_encoder = VGGish()
        if freeze_audio:
            self.audio_encoder.requires_grad_(False)
        self.encoder_conv = nn.ModuleList(conv_bn_relu(c, channels) for c in self.STAGE_CHANNELS)
        self.tpavi = nn.ModuleDict({str(i): TPAVI(channels, 128) for i in self.tpavi_stages})
        self.decoder = FPNDecoder(channels, 4, head_mid=128)
        self.sounding = SoundingHead(channels, 128, channels) if classifier else None

    def train(self, mode: bool = True) -> TPAVIModel:
        """Keep a frozen audio encoder in eval mode (no-op for VGGish, safe if it grows BN)."""
        super().train(mode)
        if self.freeze_audio:
            self.audio_encoder.eval()
        return self

    def encode_audio(self, audio: Tensor) -> Tensor:
        """VGGish embeddings ``[B*T, 128]``; no autograd graph when frozen (saves memory)."""
        if self.freeze_audio:
            with torch.no_grad():
                return self.audio_encoder(audio)
        return self.audio_encoder(audio)

    def forward(self, frames: Tensor, audio: Tensor) -> dict[str, Any]:
        _check_inputs(frames, audio, self.num_frames)
        a = self.encode_audio(audio)
        bb = self.backbone
        x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(frames))))
        feats = []
        for layer, proj in zip(
            (bb.layer1, bb.layer2, bb.layer3, bb.layer4), self.encoder_conv, strict=True
        ):
            x = layer(x)
            feats.append(proj(x))
        av_pairs = []
        for i in self.tpavi_stages:
            fused, a_aligned = self.tpavi[str(i)](feats[i], a, self.num_frames)
            feats[i] = fused
            av_pairs.append((fused, a_aligned))
        out: dict[str, Any] = {
            "logits": self.decoder(feats, (frames.shape[-2], frames.shape[-1])),
            "av_pairs": av_pairs,
        }
        if self.sounding is not None:
            out["sounding"] = self.sounding(feats[3], a)
        return out


class SmallModel(nn.Module):
    """A CPU-sized audio-visual segmenter with the same interface (see module docstring)."""

    def __init__(
        self,
        channels: int = 32,
        widths: Sequence[int] = (16, 32, 64),
        audio_dim: int = 64,
        attention: bool = True,
        classifier: bool = False,
        freeze_audio: bool = False,
        num_frames: int = 5,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.num_frames = num_frames
        self.freeze_audio = freeze_audio
        self.stages = nn.ModuleList(
            [
                nn.Sequential(conv_bn_relu(3, w1, stride=2), conv_bn_relu(w1, w1, stride=2)),
                conv_bn_relu(w1, w2, stride=2),
                conv_bn_relu(w2, w3, stride=2),
            ]
        )
        # log-mel statistics over time (mean and std per mel band) -> audio_dim
        self.audio_encoder = nn.Sequential(
            nn.Linear(2 * AUDIO_SHAPE[2], 128), nn.ReLU(), nn.Linear(128, audio_dim), nn.ReLU()
        )
        if freeze_audio:
            self.audio_encoder.requires_grad_(False)
        self.film = nn.ModuleList(nn.Linear(audio_dim, 2 * w) for w in widths)
        self.attention = TPAVI(w3, audio_dim) if attention else None
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.decoder = FPNDecoder(channels, 3, head_mid=channels)
        self.sounding = SoundingHead(w3, audio_dim, 64) if classifier else None

    def encode_audio(self, audio: Tensor) -> Tensor:
        """``[B*T, 1, 96, 64]`` -> ``[B*T, audio_dim]`` from per-band mean and std over time."""
        logmel = audio[:, 0].float()
        stats = torch.cat([logmel.mean(dim=1), logmel.std(dim=1)], dim=1).to(audio.dtype)
        return self.audio_encoder(stats)

    def forward(self, frames: Tensor, audio: Tensor) -> dict[str, Any]:
        _check_inputs(frames, audio, self.num_frames)
        a = self.encode_audio(audio)
        x = frames
        feats = []
        for stage, film in zip(self.stages, self.film, strict=True):
            x = stage(x)
            gamma, beta = film(a).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + gamma) + beta
            feats.append(x)
        av_pairs = []
        if self.attention is not None:
            fused, a_aligned = self.attention(feats[-1], a, self.num_frames)
            feats[-1] = fused
            av_pairs.append((fused, a_aligned))
        laterals = [proj(f) for proj, f in zip(self.lateral, feats, strict=True)]
        out: dict[str, Any] = {
            "logits": self.decoder(laterals, (frames.shape[-2], frames.shape[-1])),
            "av_pairs": av_pairs,
        }
        if self.sounding is not None:
            out["sounding"] = self.sounding(feats[-1], a)
        return out


# ----------------------------------------------------------------------------- factory


def _validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``cfg`` over the model's defaults, rejecting unknown keys and bad values."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("name", "tpavi")
    if name not in MODEL_NAMES:
        raise ConfigError(
            f"model.name: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}"
        )
    defaults = TPAVI_DEFAULTS if name == "tpavi" else SMALL_DEFAULTS
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model: unknown key(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid keys: {', '.join(sorted(defaults))}"
        )
    out = {**defaults, **cfg}

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"model.{key} must be {what}, got {out[key]!r}")

    for key in ("classifier", "freeze_audio") + (("attention",) if name == "small" else ()):
        need(key, isinstance(out[key], bool), "true or false")
    for key in ("channels", "num_frames") + (("audio_dim",) if name == "small" else ()):
        need(key, type(out[key]) is int and out[key] >= 1, "a positive integer")
    if name == "tpavi":
        stages = out["tpavi_stages"]
        need(
            "tpavi_stages",
            isinstance(stages, list | tuple)
            and all(type(s) is int and 0 <= s <= 3 for s in stages)
            and len(set(stages)) == len(stages),
            "a list of distinct stage indices from 0..3 (may be empty)",
        )
        for key in ("resnet50_weights", "vggish_weights"):
            need(key, out[key] is None or isinstance(out[key], str), "a path string or ''")
        for key in ("resnet50_sha256", "vggish_sha256"):
            need(key, out[key] is None or isinstance(out[key], str), "a hex string or null")
    else:
        widths = out["widths"]
        need(
            "widths",
            isinstance(widths, list | tuple)
            and len(widths) == 3
            and all(type(v) is int and v >= 1 for v in widths),
            "three positive integers",
        )
    return out


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the model named by ``cfg["name"]`` and load any configured weight files.

    Keys (defaults in ``TPAVI_DEFAULTS`` / ``SMALL_DEFAULTS``):
    ``name`` ("tpavi" | "small"), ``classifier``, ``num_frames`` (T), ``channels``
    (decoder width), ``freeze_audio``; tpavi only: ``tpavi_stages`` (subset of
    0..3), ``resnet50_weights`` / ``vggish_weights`` (path, "" = random init),
    ``resnet50_sha256`` / ``vggish_sha256`` (full digest or >= 8-hex prefix);
    small only: ``widths`` (3 stage widths), ``audio_dim``, ``attention``.
    Unknown names or keys raise :class:`~avsrobust.errors.ConfigError` (a ValueError).
    """
    c = _validate(cfg)
    if c["name"] == "small":
        return SmallModel(
            channels=c["channels"],
            widths=c["widths"],
            audio_dim=c["audio_dim"],
            attention=c["attention"],
            classifier=c["classifier"],
            freeze_audio=c["freeze_audio"],
            num_frames=c["num_frames"],
        )
    model = TPAVIModel(
        channels=c["channels"],
        tpavi_stages=c["tpavi_stages"],
        classifier=c["classifier"],
        freeze_audio=c["freeze_audio"],
        num_frames=c["num_frames"],
    )
    load_resnet50(model.backbone, c["resnet50_weights"], c["resnet50_sha256"])
    load_vggish(model.audio_encoder, c["vggish_weights"], c["vggish_sha256"])
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
