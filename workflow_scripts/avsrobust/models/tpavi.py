"""TPAVI: the AVSBench ECCV'22 ResNet-50 + VGGish + TPAVI + FPN baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .blocks import (
    COMMON_DEFAULTS,
    TPAVI,
    FPNDecoder,
    SoundingHead,
    VGGish,
    check_inputs,
    conv_bn_relu,
)

TPAVI_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "tpavi_stages": [0, 1, 2, 3],
    "channels": 256,
    "resnet50_weights": "",
    "resnet50_sha256": None,
    "vggish_weights": "",
    "vggish_sha256": None,
    "freeze_audio": True,
}


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
        check_inputs(frames, audio, self.num_frames)
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
