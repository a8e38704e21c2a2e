"""Negative audio: clips whose correct segmentation is an empty mask; and the mixture.

``mixture`` is the one generated type that is not negative: the clip's own audio plus
its off-screen donor's at ``mixture_snr_db`` (own over donor). Its sounding object still
sounds, so its correct mask is the original one; it asks whether a robust model drops
true positives when a distracting sound is present.

Each function returns float samples in the exact :class:`AudioFormat` of the
positive clip being replaced, so a loader cannot tell negatives apart by
sample rate, length or bit depth. Randomness comes only from the generator
passed in (see :mod:`avsrobust.seeding`), never from global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio_ops import conform
from .seeding import item_rng
from .wav import AudioFormat, audio_format, full_scale, read_wav, write_wav

NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class NegativeSettings:
    """The science knobs of negative generation (config ``seed`` and ``negative_audio``).

    The field defaults are config/schema.yaml's (a test checks they agree), for direct
    use and for the per-clip jobs, which pass only the settings their type depends on.
    """

    seed: int = 0
    noise_colour: str = "white"
    noise_level_dbfs: float = -30.0
    silence_dither_dbfs: float | None = None
    mixture_snr_db: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> NegativeSettings:
        """From the validated workflow config (the schema filled every value)."""
        section = config["negative_audio"]
        dither = section["silence_dither_dbfs"]
        return cls(
            seed=int(config["seed"]),
            noise_colour=str(section["noise_colour"]),
            noise_level_dbfs=float(section["noise_level_dbfs"]),
            silence_dither_dbfs=None if dither is None else float(dither),
            mixture_snr_db=float(section["mixture_snr_db"]),
        )

    def relevant(self, negtype: str) -> dict:
        """The settings that shape ``negtype`` clips (a change reruns only those)."""
        keys = {
            "silence": ("seed", "silence_dither_dbfs"),
            "noise": ("seed", "noise_colour", "noise_level_dbfs"),
            "offscreen": (),
            "mixture": ("mixture_snr_db",),
        }[negtype]
        return {k: getattr(self, k) for k in keys}


def dbfs_to_rms(level_dbfs: float) -> float:
    """RMS amplitude for a level in dBFS, full scale = amplitude 1.0 (square wave = 0 dBFS)."""
    return float(10.0 ** (level_dbfs / 20.0))


def rms_dbfs(samples: np.ndarray) -> float:
    """Measured RMS level in dBFS (same reference as :func:`dbfs_to_rms`)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return -np.inf if rms == 0 else 20.0 * np.log10(rms)


def coloured_gaussian(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean Gaussian noise of unit RMS with power spectrum 1/f**alpha.

    white alpha=0, pink alpha=1, brown alpha=2; shaped in the frequency domain
    (DC removed) so the result stays Gaussian and exactly ``n`` samples long.
    """
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; use one of {list(NOISE_COLOURS)}")
    white = rng.standard_normal(n)
    if colour == "white":
        shaped = white - white.mean()
    else:
        alpha = 1.0 if colour == "pink" else 2.0
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        gain = np.zeros_like(freqs)
        gain[1:] = freqs[1:] ** (-alpha / 2.0)
        shaped = np.fft.irfft(spectrum * gain, n)
    rms = np.sqrt(np.mean(shaped**2))
    return shaped / rms if rms > 0 else shaped


def _gaussian_at(fmt: AudioFormat, colour: str, level_dbfs: float, rng: np.random.Generator):
    channels = [coloured_gaussian(fmt.frames, colour, rng) for _ in range(fmt.channels)]
    out = np.stack(channels, axis=1) * dbfs_to_rms(level_dbfs)
    peak = float(np.abs(out).max())
    limit = full_scale(fmt.subtype)  # the positive's own format: PCM_U8 clips sooner
    if peak > limit:
        raise ValueError(
            f"{colour} noise at {level_dbfs} dBFS RMS peaks at {peak:.3f} > full scale; "
            "lower the level (we never clip)"
        )
    return out


def make_silence(
    fmt: AudioFormat, rng: np.random.Generator, dither_dbfs: float | None = None
) -> np.ndarray:
    """Digital zeros, or white Gaussian dither at ``dither_dbfs`` RMS ("near silence")."""
    if dither_dbfs is None:
        return np.zeros((fmt.frames, fmt.channels))
    return _gaussian_at(fmt, "white", dither_dbfs, rng)


def make_noise(
    fmt: AudioFormat,
    rng: np.random.Generator,
    colour: str = NegativeSettings.noise_colour,
    level_dbfs: float = NegativeSettings.noise_level_dbfs,
) -> np.ndarray:
    """Gaussian noise of the given colour at ``level_dbfs`` RMS; raises rather than clip."""
    return _gaussian_at(fmt, colour, level_dbfs, rng)


def make_offscreen(donor: str | Path, fmt: AudioFormat) -> np.ndarray:
    """The donor clip's audio, resampled/remixed/padded/cropped to ``fmt``."""
    samples, rate = read_wav(donor)
    return conform(samples, rate, fmt)


def power(samples: np.ndarray) -> float:
    """Mean square over every sample and channel (float64)."""
    return float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0


def make_mixture(
    positive: str | Path,
    donor: str | Path,
    fmt: AudioFormat,
    snr_db: float = NegativeSettings.mixture_snr_db,
) -> np.ndarray:
    """The positive clip's audio plus the donor's, scaled to ``snr_db`` = 10 log10(P_own /
    P_donor) (powers over the whole clip, all channels).

    When the sum would exceed full scale, both parts are scaled down by one gain (the
    SNR stays; nothing clips). A silent own clip or donor has no SNR: the result is the
    own audio unchanged (a silent donor adds nothing; over a silent clip any level of the
    donor would be arbitrary).
    """
    own_raw, own_rate = read_wav(positive)
    own = conform(own_raw, own_rate, fmt).astype(np.float64)
    other = make_offscreen(donor, fmt).astype(np.float64)
    p_own, p_other = power(own), power(other)
    if p_own == 0.0 or p_other == 0.0:
        return own
    mix = own + other * np.sqrt(p_own / (p_other * 10.0 ** (snr_db / 10.0)))
    peak = float(np.abs(mix).max())
    limit = full_scale(fmt.subtype)
    if peak > limit:
        mix = mix * (limit / peak)
    return mix


def generate_negative(
    settings: NegativeSettings,
    dataset: str,
    split: str,
    video: str,
    negtype: str,
    positive: str | Path,
    out: str | Path,
    donor: str | Path | None = None,
) -> None:
    """Write one negative clip for ``video``, formatted like its ``positive`` WAV.

    The random stream depends only on (seed, dataset, split, video, negtype), so
    this file comes out byte-identical whenever and wherever it is regenerated
    (``offscreen`` and ``mixture`` draw nothing: their donor comes from the plan).
    """
    fmt = audio_format(positive)
    rng = item_rng(settings.seed, dataset, split, video, negtype)
    if negtype == "silence":
        samples = make_silence(fmt, rng, settings.silence_dither_dbfs)
    elif negtype == "noise":
        samples = make_noise(fmt, rng, settings.noise_colour, settings.noise_level_dbfs)
    elif negtype == "offscreen":
        if donor is None:
            raise ValueError(f"{dataset}/{split}/{video}: offscreen audio needs a donor")
        samples = make_offscreen(donor, fmt)
    elif negtype == "mixture":
        if donor is None:
            raise ValueError(f"{dataset}/{split}/{video}: mixture audio needs a donor")
        samples = make_mixture(positive, donor, fmt, settings.mixture_snr_db)
    else:
        raise ValueError(f"unknown negative type {negtype!r}")
    write_wav(out, samples, fmt)
