"""Building blocks shared by the models: VGGish, TPAVI attention, FPN decoder, heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resize import resize_bilinear

AUDIO_SHAPE = (1, 96, 64)
#: Model config keys every model accepts (each model adds its own).
COMMON_DEFAULTS: dict[str, Any] = {
    "name": "tpavi",
    "classifier": False,
    "num_frames": 5,
}


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv + BN + ReLU (no bias: BN has one)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


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


class FrozenAudioMixin:
    """For models with a VGGish ``audio_encoder`` and a ``freeze_audio`` flag (tpavi,
    avsegformer): a frozen encoder stays in eval mode and runs without an autograd graph."""

    audio_encoder: nn.Module
    freeze_audio: bool

    def train(self, mode: bool = True) -> Any:
        """Keep a frozen audio encoder in eval mode (no-op for VGGish, safe if it grows BN)."""
        super().train(mode)  # type: ignore[misc]
        if self.freeze_audio:
            self.audio_encoder.eval()
        return self

    def encode_audio(self, audio: Tensor) -> Tensor:
        """VGGish embeddings ``[B*T, 128]``; no autograd graph when frozen (saves memory)."""
        if self.freeze_audio:
            with torch.no_grad():
                return self.audio_encoder(audio)
        return self.audio_encoder(audio)


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


def check_inputs(frames: Tensor, audio: Tensor, num_frames: int) -> None:
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
