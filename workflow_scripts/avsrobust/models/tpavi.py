"""TPAVI: the AVSBench (ECCV'22) baseline, exactly as the published ``Pred_endecoder``.

ResNet-50 or PVT-v2-b5 stages (strides 4/8/16/32), each projected to ``channels`` by the
published ``Classifier_Module`` (:class:`DilatedProjection`); VGGish (128-d) embeddings;
TPAVI attention at ``tpavi_stages``; the DPT-style decoder (:class:`DPTDecoder`). Four details
of the published forward that a reading of the paper would get wrong, all reproduced here
(side-by-side with the published code: ``benchmarks/published_parity.py``):

* the projection is a *sum of four 3x3 convs* with dilation and padding 3, 6, 12, 18, with
  bias and no BN/ReLU (weights N(0, 0.01));
* the residual conv unit's ``ReLU(inplace=True)`` overwrites its input, so the skip adds
  ``relu(x)``, not ``x``; the same in-place ReLU turns the fused stage maps the model returns
  for the MS3 matching loss into ``relu(fused)``;
* the top fusion block gets one input, so its lateral residual unit never runs (and has no
  parameters here);
* each fusion block ends with a x2 bilinear upsampling with ``align_corners=True``; the head's
  first conv runs at stride 2 (112 px for 224 px input), then x2 with ``align_corners=False``.

At input sizes divisible by 32 every resize is the published x2; other sizes resize to the next
map's size (and the head to the input size), where the published code would fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import PRETRAINED_DEFAULTS, build_backbone, stage_features
from .blocks import (
    COMMON_DEFAULTS,
    TPAVI,
    FrozenAudioMixin,
    ResidualConvUnit,
    SoundingHead,
    VGGish,
    check_inputs,
)
from .resize import resize_bilinear

TPAVI_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "backbone": "resnet50",
    "tpavi_stages": [0, 1, 2, 3],
    "channels": 256,
    "freeze_audio": True,
    **PRETRAINED_DEFAULTS,
}

DILATIONS = (3, 6, 12, 18)


class DilatedProjection(nn.Module):
    """AVSBench's ``Classifier_Module``: ``sum_d conv3x3_dilation_d(x)``, d in 3, 6, 12, 18."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, padding=d, dilation=d, bias=True) for d in DILATIONS
        )
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


class ResidualUnit(ResidualConvUnit):
    """``conv2(relu(conv1(relu(x)))) + relu(x)``: the published unit, in-place ReLU included
    (the same convs as :class:`~.blocks.ResidualConvUnit`, whose skip adds ``x``)."""

    def forward(self, x: Tensor) -> Tensor:
        r = torch.relu(x)
        return self.conv2(torch.relu(self.conv1(r))) + r


class FusionBlock(nn.Module):
    """``up2(unit_out(coarser + unit_lateral(lateral)))``; the top block has no lateral unit."""

    def __init__(self, channels: int, lateral: bool) -> None:
        super().__init__()
        self.lateral = ResidualUnit(channels) if lateral else None
        self.out = ResidualUnit(channels)

    def forward(self, x: Tensor, lateral: Tensor | None, size: tuple[int, int]) -> Tensor:
        if self.lateral is not None and lateral is not None:
            x = x + self.lateral(lateral)
        return resize_bilinear(self.out(x), size, align_corners=True)


class DPTDecoder(nn.Module):
    """``path4 -> path1`` fusion chain and the output head of ``Pred_endecoder``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # blocks[i] is published path{i+1}: blocks[3] (path4) takes the top map alone
        self.blocks = nn.ModuleList(FusionBlock(channels, lateral=i < 3) for i in range(4))
        self.head_in = nn.Conv2d(channels, 128, 3, padding=1)
        self.head_mid = nn.Conv2d(128, 32, 3, padding=1)
        self.head_out = nn.Conv2d(32, 1, 1)

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        f1, f2, f3, f4 = feats
        # each block upsamples to the next lateral's size (x2 at sizes divisible by 32)
        x = self.blocks[3](f4, None, f3.shape[-2:])
        x = self.blocks[2](x, f3, f2.shape[-2:])
        x = self.blocks[1](x, f2, f1.shape[-2:])
        x = self.blocks[0](x, f1, (2 * f1.shape[-2], 2 * f1.shape[-1]))
        x = resize_bilinear(self.head_in(x), size)
        return self.head_out(torch.relu(self.head_mid(x)))


class TPAVIModel(FrozenAudioMixin, nn.Module):
    """The published AVSBench TPAVI network (see the module docstring); the ``classifier``
    option adds this project's "is something sounding" head (not in the published model)."""

    def __init__(
        self,
        backbone: str = "resnet50",
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
        self.backbone = build_backbone(backbone)
        self.audio_encoder = VGGish()
        if freeze_audio:
            self.audio_encoder.requires_grad_(False)
        self.encoder_conv = nn.ModuleList(
            DilatedProjection(c, channels) for c in self.backbone.channels
        )
        self.tpavi = nn.ModuleDict({str(i): TPAVI(channels, 128) for i in self.tpavi_stages})
        self.decoder = DPTDecoder(channels)
        self.sounding = SoundingHead(channels, 128, channels) if classifier else None

    def forward(self, frames: Tensor, audio: Tensor) -> dict[str, Any]:
        check_inputs(frames, audio, self.num_frames)
        a = self.encode_audio(audio)
        feats = [
            proj(f)
            for proj, f in zip(
                self.encoder_conv, stage_features(self.backbone, frames, False), strict=True
            )
        ]
        av_pairs = []
        for i in self.tpavi_stages:
            fused, a_aligned = self.tpavi[str(i)](feats[i], a, self.num_frames)
            feats[i] = fused
            # the published in-place ReLU of the decoder leaves relu(fused) in the list the
            # matching loss reads
            av_pairs.append((torch.relu(fused), a_aligned))
        out: dict[str, Any] = {
            "logits": self.decoder(feats, (frames.shape[-2], frames.shape[-1])),
            "av_pairs": av_pairs,
        }
        if self.sounding is not None:
            out["sounding"] = self.sounding(feats[3], a)
        return out
