"""WAV reading with clear errors, and a byte-deterministic WAV writer.

We write WAV headers ourselves: libsndfile adds a time-stamped PEAK chunk to
float files, which would break "same seed, same bytes". Reading goes through
soundfile (libsndfile), wrapped so a bad file names itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_write_bytes
from .errors import InputError

#: soundfile subtype -> (WAV format tag, bytes per sample)
SUBTYPES: dict[str, tuple[int, int]] = {
    "PCM_16": (1, 2),
    "PCM_24": (1, 3),
    "PCM_32": (1, 4),
    "FLOAT": (3, 4),
}


@dataclass(frozen=True)
class AudioFormat:
    """The format a clip is stored in: what a negative clip must reproduce."""

    sample_rate: int = 16000
    channels: int = 1
    frames: int = 80000
    subtype: str = "PCM_16"

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def audio_format(path: str | Path) -> AudioFormat:
    """Read a WAV header (cheap: no samples are decoded)."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from None
    if info.frames <= 0:
        raise InputError(path, "audio file holds no samples")
    subtype = info.subtype if info.subtype in SUBTYPES else "PCM_16"
    return AudioFormat(int(info.samplerate), int(info.channels), int(info.frames), subtype)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Return ``(samples, sample_rate)``; samples float32 [frames, channels] in [-1, 1).

    PCM_16 samples come back as int16/32768 exactly, as the VGGish front end expects.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise InputError(path, "audio file holds no samples")
    if not np.isfinite(data).all():
        raise InputError(path, "audio holds NaN or infinite samples")
    return data, int(rate)


def encode_wav(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """Encode float samples in [-1, 1] ([frames] or [frames, channels]) as WAV bytes.

    Integer formats scale by 2**(bits-1) and round half to even; values that do
    not fit raise instead of wrapping or clipping silently.
    """
    if fmt.subtype not in SUBTYPES:
        raise ValueError(f"unsupported WAV subtype {fmt.subtype!r}; use one of {sorted(SUBTYPES)}")
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.shape != (fmt.frames, fmt.channels):
        raise ValueError(f"samples shape {data.shape} != format {(fmt.frames, fmt.channels)}")
    tag, width = SUBTYPES[fmt.subtype]
    if tag == 3:
        payload = data.astype("<f4").tobytes()
    else:
        scale = float(2 ** (8 * width - 1))
        ints = np.rint(data * scale)
        if ints.size and (ints.max() > scale - 1 or ints.min() < -scale):
            raise ValueError(
                f"samples exceed full scale (peak {np.abs(data).max():.4f}); refusing to clip"
            )
        if width == 2:
            payload = ints.astype("<i2").tobytes()
        elif width == 4:
            payload = ints.astype("<i4").tobytes()
        else:  # 24-bit: low three bytes of little-endian int32
            payload = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    block = fmt.channels * width
    fmt_chunk = struct.pack(
        "<HHIIHH", tag, fmt.channels, fmt.sample_rate, fmt.sample_rate * block, block, 8 * width
    )
    chunks = [b"fmt ", struct.pack("<I", len(fmt_chunk)), fmt_chunk]
    if tag == 3:
        chunks += [b"fact", struct.pack("<II", 4, fmt.frames)]
    chunks += [b"data", struct.pack("<I", len(payload)), payload]
    if len(payload) % 2:
        chunks.append(b"\0")
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path: str | Path, samples: np.ndarray, fmt: AudioFormat) -> None:
    """Encode and write atomically (temporary name, then rename)."""
    atomic_write_bytes(path, encode_wav(samples, fmt))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
