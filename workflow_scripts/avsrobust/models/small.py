"""The small CPU model: strided convs, a log-mel statistics MLP, FiLM, one TPAVI block and a
per-location audio-visual match that gates the mask.

Why the match (issue: "the robust model must learn which sound belongs to what it sees"):
FiLM and TPAVI let the audio *modulate* the visual features, which is enough to select
the sounding object among the visible ones, and negative training teaches "no sound
energy -> no mask". It does not teach "this sound comes from nothing I see": trained
with off-screen sound, the FiLM model still painted the visible objects (S4 off-screen
FPR 0.074 -> 0.074). So the model also asks the question directly, per location: a
visual embedding of every cell (stride 8, from the first stage *before* any audio
modulation, so it describes what is there, not what was heard) is compared with an
embedding of the audio (cosine, learned scale and bias) into a match map ("this cell
shows what makes this sound"). Its maximum over the frame is the "sounding" logit (does
any region match this sound?), and the mask is gated by it:
``p(pixel) = sigmoid(segmenter) * sigmoid(max match)``. The segmenter keeps its job
(the shape of what sounds); the match decides whether anything visible sounds at all.

The per-band statistics encoder is kept on purpose: through the VGGish front end the
synthetic voices are separable by per-band mean and std alone (nearest class centroid
100% on held-out 0.96 s examples, measured), so a temporal audio encoder buys nothing
here; what was missing was the audio-visual correspondence, not the audio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
    "match": True,
}
#: Width of the audio and visual match embeddings.
MATCH_DIM = 32
#: Channels of the decoder head at full resolution (a 32-channel head spent ~30% of a
#: CPU training step upsampling and convolving at 64 px, for no measured gain).
HEAD_CHANNELS = 8


def and_logits(a: Tensor, b: Tensor) -> Tensor:
    """Logit of ``sigmoid(a) * sigmoid(b)`` (both hold), computed in log space in float32."""
    lp = (F.logsigmoid(a.float()) + F.logsigmoid(b.float())).clamp(max=-1e-6)
    return lp - torch.log(-torch.expm1(lp))


class SmallModel(nn.Module):
    """A CPU-sized audio-visual segmenter with the common interface (see the package docs).

    With ``match`` the output dict also holds ``match`` ``[N, 1, h, w]`` (match logits at
    stride 8), ``match_cross`` ``[N, B, h, w]`` (frame i's cells against the audio of every
    video j of the batch at the same time index; the blocks j = i's own video equal
    ``match``), ``seg_logits`` (the ungated mask) and ``gate_logits`` (the gated mask with
    the segmenter's gradient stopped), which :func:`avsrobust.losses.total_loss` uses.
    """

    def __init__(
        self,
        channels: int = 32,
        widths: Sequence[int] = (16, 32, 64),
        audio_dim: int = 64,
        attention: bool = True,
        classifier: bool = False,
        freeze_audio: bool = False,
        num_frames: int = 5,
        match: bool = True,
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.num_frames = num_frames
        self.freeze_audio = freeze_audio
        self.classifier = classifier
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
        self.decoder = FPNDecoder(channels, 3, head_mid=HEAD_CHANNELS)
        self.match = match
        self.sounding = None
        if match:
            self.match_visual = nn.Sequential(
                conv_bn_relu(w1, w2, stride=2), conv_bn_relu(w2, w2), nn.Conv2d(w2, MATCH_DIM, 1)
            )
            self.match_audio = nn.Linear(audio_dim, MATCH_DIM)
            # cosine in [-1, 1] -> logits in [-13, 7] at the start: "no match" until learned
            self.match_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.match_bias = nn.Parameter(torch.tensor(-3.0))
        elif classifier:
            self.sounding = SoundingHead(w3, audio_dim, 64)

    def encode_audio(self, audio: Tensor) -> Tensor:
        """``[B*T, 1, 96, 64]`` -> ``[B*T, audio_dim]`` from per-band mean and std over time."""
        logmel = audio[:, 0].float()
        stats = torch.cat([logmel.mean(dim=1), logmel.std(dim=1)], dim=1).to(audio.dtype)
        return self.audio_encoder(stats)

    def _match(self, visual: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(match ``[N, 1, h, w]``, match_cross ``[N, B, h, w]``) logits, float32."""
        v = F.normalize(self.match_visual(visual).float(), dim=1)
        q = F.normalize(self.match_audio(audio).float(), dim=1)
        b, t = v.shape[0] // self.num_frames, self.num_frames
        cross = torch.einsum("btchw,jtc->btjhw", v.reshape(b, t, *v.shape[1:]), q.reshape(b, t, -1))
        cross = cross.flatten(0, 1) * self.match_scale.exp() + self.match_bias
        own = cross[torch.arange(b * t, device=v.device), torch.arange(b * t, device=v.device) // t]
        return own[:, None], cross

    def forward(self, frames: Tensor, audio: Tensor) -> dict[str, Any]:
        check_inputs(frames, audio, self.num_frames)
        a = self.encode_audio(audio)
        x = frames
        feats, visual = [], None
        for stage, film in zip(self.stages, self.film, strict=True):
            x = stage(x)
            visual = x if visual is None else visual  # first stage, before any audio
            gamma, beta = film(a).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + gamma) + beta
            feats.append(x)
        av_pairs = []
        if self.attention is not None:
            fused, a_aligned = self.attention(feats[-1], a, self.num_frames)
            feats[-1] = fused
            av_pairs.append((fused, a_aligned))
        laterals = [proj(f) for proj, f in zip(self.lateral, feats, strict=True)]
        logits = self.decoder(laterals, (frames.shape[-2], frames.shape[-1]))
        out: dict[str, Any] = {"av_pairs": av_pairs}
        if self.match:
            assert visual is not None
            match, cross = self._match(visual, a)
            gate = match.flatten(1).amax(1)  # does any region match this sound?
            out.update(match=match, match_cross=cross, seg_logits=logits)
            out["gate_logits"] = and_logits(logits.detach(), gate[:, None, None, None])
            logits = and_logits(logits, gate[:, None, None, None])
            if self.classifier:
                out["sounding"] = gate
        elif self.sounding is not None:
            out["sounding"] = self.sounding(feats[-1], a)
        out["logits"] = logits
        return out
