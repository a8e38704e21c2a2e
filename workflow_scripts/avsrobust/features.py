"""VGGish log-mel features: one front end for positive audio and every negative type.

The published robust code computed negative-audio features with another pipeline
(librosa, 22,050 Hz, z-scored), so a model could tell negatives from positives by
feature statistics alone (domain.md section 4). Here every condition goes through
:func:`vggish_logmel`, a torch reimplementation of torchvggish
``vggish_input.waveform_to_examples`` (``mel_features.py``): 16 kHz, 25 ms periodic
Hann window, 10 ms hop, no centre padding, |rfft| with 512 points, 64 HTK mel bands
over 125-7500 Hz with triangles built in the mel domain, ``log(mel + 0.01)``,
non-overlapping examples of 96 frames.

This module imports torch (about 2 s): only batch jobs import it, once per job,
never once per clip; light modules must not import it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path, npy_memmap
from .audio_ops import conform
from .errors import InputError
from .layout import N_FRAMES
from .readahead import read_ahead
from .runtime import resolve_device
from .wav import AudioFormat, read_wav

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT_LENGTH = 512  # 2 ** ceil(log2(WINDOW)), as torchvggish
NUM_MEL_BINS = 64
LOWER_EDGE_HZ = 125.0
UPPER_EDGE_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s; examples do not overlap (hop 96)
NUM_EXAMPLES = N_FRAMES  # one 0.96 s example per video frame
#: ``features:`` defaults of config/schema.yaml, for direct use (CLI, tests); a test
#: checks they equal the schema's. The workflow passes the configured values.
BATCH_SIZE = 128
SECONDS = 5.0
DEVICE = "auto"


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as torchvggish (``1127 ln(1 + f/700)``)."""
    return 1127.0 * np.log(1.0 + np.asarray(hertz, dtype=np.float64) / 700.0)


def spectrogram_to_mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    audio_sample_rate: int = SAMPLE_RATE,
    lower_edge_hertz: float = LOWER_EDGE_HZ,
    upper_edge_hertz: float = UPPER_EDGE_HZ,
) -> np.ndarray:
    """[num_spectrogram_bins, num_mel_bins] float64 weights, torchvggish's definition.

    Built by hand because ``torchaudio.functional.melscale_fbanks`` interpolates the
    triangles in Hz, not in mel, and so differs from the features VGGish was trained on.
    """
    nyquist = audio_sample_rate / 2.0
    if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= nyquist:
        raise ValueError(
            f"need 0 <= lower ({lower_edge_hertz}) < upper ({upper_edge_hertz}) <= {nyquist}"
        )
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))[:, None]
    edges = np.linspace(
        hertz_to_mel(lower_edge_hertz), hertz_to_mel(upper_edge_hertz), num_mel_bins + 2
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slope = (bins_mel - lower) / (center - lower)
    upper_slope = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0  # the DC bin never contributes, as in torchvggish
    return weights


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Window and mel matrix on ``device``, built once per device."""
    window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float32, device=device)
    mel = torch.from_numpy(spectrogram_to_mel_matrix()).to(device=device, dtype=torch.float32)
    return window, mel


def vggish_logmel(waveforms: torch.Tensor, num_examples: int = NUM_EXAMPLES) -> torch.Tensor:
    """[B, N] float 16 kHz in [-1, 1] -> [B, num_examples, 1, 96, 64] float32.

    Runs on the device of the input. Fewer examples than ``num_examples`` are padded
    by repeating the last one; extra ones are dropped (and never computed).
    """
    if waveforms.ndim != 2:
        raise ValueError(f"expected waveforms [batch, samples], got shape {tuple(waveforms.shape)}")
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    batch, samples = waveforms.shape
    n_frames = 1 + (samples - WINDOW) // HOP if samples >= WINDOW else 0
    have = 1 + (n_frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES if n_frames >= EXAMPLE_FRAMES else 0
    if have == 0:
        need = WINDOW + (EXAMPLE_FRAMES - 1) * HOP
        raise ValueError(f"need at least {need} samples (one 0.96 s example), got {samples}")
    keep = min(have, num_examples)
    frames_needed = keep * EXAMPLE_FRAMES
    # Only the samples the kept examples read: a 7 s clip costs as much as a 5 s one.
    x = waveforms[:, : (frames_needed - 1) * HOP + WINDOW].to(torch.float32)
    window, mel = _constants(x.device)
    with torch.no_grad():
        frames = x.unfold(-1, WINDOW, HOP)  # [B, F, 400], a view: no centre padding
        spectrum = torch.fft.rfft(frames * window, n=FFT_LENGTH).abs()  # magnitude, not power
        logmel = torch.log(spectrum @ mel + LOG_OFFSET)  # [B, F, 64]
        examples = logmel.reshape(batch, keep, EXAMPLE_FRAMES, NUM_MEL_BINS)
        if keep < num_examples:
            last = examples[:, -1:].expand(batch, num_examples - keep, -1, -1)
            examples = torch.cat([examples, last], dim=1)
        return examples.unsqueeze(2).contiguous()


def load_clip(path: str | Path, seconds: float = SECONDS) -> np.ndarray:
    """float32 [seconds * 16000] mono 16 kHz, normalised as the README documents.

    Resampled, downmixed, then zero-padded or cropped at the end by ``audio_ops``,
    so every condition reaches the front end in the same form.
    """
    data, rate = read_wav(path)
    fmt = AudioFormat(sample_rate=SAMPLE_RATE, channels=1, frames=round(seconds * SAMPLE_RATE))
    return np.ascontiguousarray(conform(data, rate, fmt)[:, 0], dtype=np.float32)


def extract_features(
    wav_paths: Sequence[str | Path],
    out_npy: str | Path,
    batch_size: int = BATCH_SIZE,
    seconds: float = SECONDS,
    progress: bool = False,
    device: str = DEVICE,
) -> None:
    """Write [len(wav_paths), 5, 1, 96, 64] float32 features of the clips to ``out_npy``.

    Clips stream in batches (the next batch loads in threads while this one is
    computed), so memory stays bounded for any split size. ``device``: ``auto`` (the GPU
    when the job has one; GPU and CPU results agree to ~1e-4, not bit for bit, so the
    workflow logs the device), ``cpu`` or ``cuda[:N]``. The array is written
    through a memory map (its space reserved first: a full disk raises
    :class:`~avsrobust.errors.DiskFull`) under a temporary name and renamed at the
    end: a failed or killed job leaves no partial ``.npy`` that a rerun would trust. The file is a
    plain ``.npy`` (no pickle), byte-identical to ``np.save`` of the same array.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = [Path(p) for p in wav_paths]
    dev = resolve_device(device)
    shape = (len(paths), NUM_EXAMPLES, 1, EXAMPLE_FRAMES, NUM_MEL_BINS)
    workers = max(1, min(8, os.cpu_count() or 1))
    # the next batch's clips load in threads while this batch is computed
    loading = read_ahead(
        functools.partial(load_clip, seconds=seconds), paths, workers, 2 * batch_size
    )
    with contextlib.closing(loading) as clips_in_order, atomic_path(out_npy) as tmp:
        out = npy_memmap(tmp, np.float32, shape)  # space reserved: a full disk says so
        try:
            start = 0
            while batch := list(itertools.islice(clips_in_order, batch_size)):
                clips = np.stack(batch)
                feats = vggish_logmel(torch.from_numpy(clips).to(dev))
                out[start : start + len(clips)] = feats.cpu().numpy()
                start += len(clips)
                if progress:
                    print(f"features: {start}/{len(paths)} clips", file=sys.stderr, flush=True)
            out.flush()
        finally:
            del out  # unmap before the rename (or the unlink on error)


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read path list ({exc})") from None
    return [line.strip() for line in lines if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m avsrobust.features --out X.npy [--list FILE] [WAV ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m avsrobust.features",
        description="VGGish log-mel features [N, 5, 1, 96, 64] of WAV clips, in input order.",
    )
    parser.add_argument("wavs", nargs="*", type=Path, help="WAV files")
    parser.add_argument("--list", type=Path, help="file with one WAV path per line")
    parser.add_argument("--out", type=Path, required=True, help="output .npy")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="clip length (pad/crop)")
    parser.add_argument("--device", default=DEVICE, help="auto (GPU if any), cpu or cuda[:N]")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = list(args.wavs) + ([Path(p) for p in _read_list(args.list)] if args.list else [])
        extract_features(paths, args.out, args.batch_size, args.seconds, args.progress, args.device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
