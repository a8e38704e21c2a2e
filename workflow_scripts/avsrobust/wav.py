"""WAV reading with clear errors, and a byte-deterministic WAV writer.

We write WAV headers ourselves: libsndfile adds a time-stamped PEAK chunk to
float files, which would break "same seed, same bytes". Reading goes through
soundfile (libsndfile), wrapped so a bad file names itself.

A file is read as audio only when it is what it claims: a regular file (never
a FIFO) holding a RIFF or RF64 WAVE container (libsndfile would also decode an
MP3 or FLAC renamed ``.wav``), whose ``data`` chunk is as long as its header
says (a cut file would otherwise read as a shorter clip). Negatives copy the
positive's sample format, so a positive in a format we cannot write (u-law,
ADPCM, MP3 inside WAV, ...) is refused rather than silently re-encoded.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_write_bytes
from .errors import InputError, regular_file

#: soundfile subtype -> (WAV format tag, bytes per sample): every linear PCM and float
#: subtype libsndfile writes in WAV. 8-bit WAV is unsigned (offset 128), as the format says.
SUBTYPES: dict[str, tuple[int, int]] = {
    "PCM_U8": (1, 1),
    "PCM_16": (1, 2),
    "PCM_24": (1, 3),
    "PCM_32": (1, 4),
    "FLOAT": (3, 4),
    "DOUBLE": (3, 8),
}
#: What sf.info calls the containers we read (WAVEX: WAVE_FORMAT_EXTENSIBLE in RIFF).
WAV_CONTAINERS = ("WAV", "WAVEX", "RF64")


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


def _data_chunk(path: Path) -> tuple[int, int] | None:
    """(bytes the ``data`` chunk declares, bytes the file holds after its header).

    Raises InputError unless the file starts as a RIFF/RF64 WAVE container.
    None when the size is unknown (streamed WAVs write 0 or 0xFFFFFFFF) or the
    chunk walk does not meet a ``data`` chunk (libsndfile then decides).
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise InputError(
                path, f"not a WAV file (starts with {head[:12]!r}, expected RIFF/RF64 ... WAVE)"
            )
        size = os.fstat(handle.fileno()).st_size
        pos, ds64_data = 12, None
        for _ in range(64):  # a WAV has a handful of chunks before its data
            handle.seek(pos)
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk, n = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"ds64" and n >= 16:  # RF64: riff size, data size (64-bit each)
                ds64_data = struct.unpack("<Q", handle.read(16)[8:16])[0]
            elif chunk == b"data":
                declared = ds64_data if (n == 0xFFFFFFFF and ds64_data is not None) else n
                if declared in (0, 0xFFFFFFFF):
                    return None
                return declared, size - pos - 8
            pos += 8 + n + (n & 1)
        return None


def _check_wav(path: str | Path) -> Path:
    """A regular file with a WAV container whose data is not cut short (see module doc)."""
    path = regular_file(path, "audio file")
    try:
        sizes = _data_chunk(path)
    except OSError as exc:
        raise InputError(path, f"not a readable audio file ({exc.strerror})") from None
    if sizes is not None and sizes[1] < sizes[0]:
        declared, held = sizes
        try:
            info = sf.info(str(path))
            block = info.channels * SUBTYPES.get(info.subtype, (0, 0))[1]
            rate = info.samplerate
        except Exception:  # noqa: BLE001 - the sizes alone say what is wrong
            block = rate = 0
        secs = (
            f" ({held // block / rate:.3f} s of {declared // block / rate:.3f} s)"
            if block and rate
            else ""
        )
        raise InputError(
            path,
            f"WAV data is cut short: the header declares {declared} bytes of samples, the file "
            f"holds {held}{secs}; the file is truncated (re-copy it)",
        )
    return path


def audio_format(path: str | Path) -> AudioFormat:
    """Read a WAV header (cheap: no samples are decoded); InputError for anything that is
    not a complete WAV in a sample format negatives can copy."""
    path = _check_wav(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from None
    if info.format not in WAV_CONTAINERS:
        raise InputError(path, f"not a WAV file (libsndfile reads it as {info.format})")
    if info.subtype not in SUBTYPES:
        raise InputError(
            path,
            f"WAV sample format {info.subtype} ({info.subtype_info}) is not supported: negatives "
            f"copy the positive's format, one of {', '.join(SUBTYPES)}; convert the file",
        )
    if info.frames <= 0:
        raise InputError(path, "audio file holds no samples")
    return AudioFormat(int(info.samplerate), int(info.channels), int(info.frames), info.subtype)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Return ``(samples, sample_rate)``; samples float32 [frames, channels] in [-1, 1).

    PCM_16 samples come back as int16/32768 exactly, as the VGGish front end expects.
    Any sample format libsndfile decodes is read; the container checks of
    :func:`audio_format` apply.
    """
    path = _check_wav(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            container = handle.format
            data = handle.read(dtype="float32", always_2d=True)
            rate = handle.samplerate
    except Exception as exc:
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from None
    if container not in WAV_CONTAINERS:
        raise InputError(path, f"not a WAV file (libsndfile reads it as {container})")
    if data.shape[0] == 0:
        raise InputError(path, "audio file holds no samples")
    if not np.isfinite(data).all():
        raise InputError(path, "audio holds NaN or infinite samples")
    return data, int(rate)


def full_scale(subtype: str) -> float:
    """Largest amplitude a subtype stores without clipping (1.0 for float formats)."""
    tag, width = SUBTYPES[subtype]
    return 1.0 if tag == 3 else 1.0 - 2.0 ** -(8 * width - 1)


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
        payload = data.astype("<f4" if width == 4 else "<f8").tobytes()
    else:
        scale = float(2 ** (8 * width - 1))
        ints = np.rint(data * scale)
        if ints.size and (ints.max() > scale - 1 or ints.min() < -scale):
            raise ValueError(
                f"samples exceed full scale (peak {np.abs(data).max():.4f}); refusing to clip"
            )
        if width == 1:  # 8-bit WAV is unsigned: 128 is zero
            payload = (ints + 128).astype(np.uint8).tobytes()
        elif width == 2:
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
