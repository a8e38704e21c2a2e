"""The small CPU model: strided convs, a log-mel statistics MLP, FiLM and one TPAVI block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import (
    AUDIO_SHAPE,
    COMMON_DEFAULTS,
    TPAVI,
    FPNDecoder,
    SoundingHead,
    check_inputs,
    conv_bn_relu,
)

SMALL_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "name": "small",
    # the sounding classifier is part of the small model's robust recipe
    "classifier": True,
    "channels": 32,
    "widths": [16, 32, 64],
    "audio_dim": 64,
    "attention": True,
    # the small audio MLP has no pretrained weights: it must learn, so not frozen
    "freeze_audio": False,
}


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
        check_inputs(frames, audio, self.num_frames)
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
