"""Normalise audio to a target format: resample, down/up-mix, pad or crop.

Documented normalisations (README, "Bad input"): a clip at another sample rate
is resampled (polyphase, scipy), more channels are averaged to mono, mono is
repeated to more channels, a longer clip is cropped at the end and a shorter
one is zero-padded at the end.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from .wav import AudioFormat


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling along axis 0 ([frames] or [frames, channels])."""
    if rate_in == rate_out:
        return samples
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    from scipy.signal import resample_poly  # 1 s import: only when a clip needs it

    g = gcd(rate_in, rate_out)
    out = resample_poly(np.asarray(samples, dtype=np.float64), rate_out // g, rate_in // g, axis=0)
    return out.astype(np.float32)


def remix(samples: np.ndarray, channels: int) -> np.ndarray:
    """[frames, c] -> [frames, channels]: average to mono, or repeat mono."""
    if samples.ndim == 1:
        samples = samples[:, None]
    have = samples.shape[1]
    if have == channels:
        return samples
    mono = samples.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    return np.repeat(mono, channels, axis=1)


def fit_length(samples: np.ndarray, frames: int) -> np.ndarray:
    """Crop at the end or zero-pad at the end to exactly ``frames`` samples."""
    have = samples.shape[0]
    if have == frames:
        return samples
    if have > frames:
        return samples[:frames]
    pad = [(0, frames - have)] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, pad)


def conform(samples: np.ndarray, rate: int, fmt: AudioFormat) -> np.ndarray:
    """Bring ``samples`` ([frames, channels] at ``rate``) to ``fmt`` exactly."""
    out = remix(samples, fmt.channels)
    out = resample(out, rate, fmt.sample_rate)
    out = fit_length(out, fmt.frames)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:  # resampling can overshoot a full-scale input: scale, never clip
        out = out / np.float32(peak / (1.0 - 2.0**-15))
    return out
