"""Saved predictions: one compact format for our models and for anyone else's.

Why one format: every number in the report is computed from saved predictions,
never from live model output, so the masks of an external AVS codebase ("bring
your own predictions") and the masks of the models trained here go through the
very same scoring code.

The format, per (dataset, experiment, condition) folder:

- ``{run}.npy``: uint8 ``[N, 5, S, S]``, the foreground probability of every
  pixel quantised as ``round(255 * p)`` (``run`` = ``seed0``, ``seed1``, ... for
  our models, ``external`` for imported masks). S is the evaluation size (the
  frame cache's), as AVSBench scores at a fixed 224 x 224;
- ``index.tsv``: ``row, video, category`` of the rows.

Quantisation keeps every metric well defined: a pixel is foreground (p > 0.5)
exactly when ``q >= 128``, and :func:`uint8_to_logits` returns logits whose
sigmoid equals ``q / 255`` to float32 precision, which never sits on one of the
F-score thresholds ``i / 254`` (those differ from every ``q / 255`` by at
least 1.5e-5, far above float32 rounding).

PNG layout (export and import): ``{root}/{condition}/{split}/{category}/{video}/
{video}_{k}.png`` for S4 and ``{root}/{condition}/{split}/{video}/{video}_{k}.png``
for MS3, k = 1..5: AVSBench's ``gt_masks`` layout with one folder per audio
condition. Files are 8-bit greyscale: binary masks (0/1 or 0/255, any nonzero
palette index) or probability maps (0..255).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path, atomic_write_bytes, npy_memmap
from .errors import ConfigError, InputError
from .frame_cache import load_npy
from .layout import N_FRAMES
from .png import png_bytes
from .row_index import PREDICTION_COLUMNS, read_index
from .row_index import write_index as write_row_index

INDEX_FILE = "index.tsv"
PNG_FORMATS = ("auto", "mask", "probability")


# ----------------------------------------------------------------------------- quantisation
# numpy arrays, or torch tensors through their own methods: this module never imports
# torch, so the light jobs (PNG export, tables) that read predictions stay light.
def probs_to_uint8(probs):
    """Probabilities (torch or numpy, any shape) -> uint8 ``round(255 p)`` (same library)."""
    if isinstance(probs, np.ndarray):
        return np.clip(np.rint(probs.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return (probs.double() * 255.0).round().clamp_(0, 255).byte()


def logits_to_uint8(logits):
    """Model logits (torch) -> quantised probabilities (uint8)."""
    return probs_to_uint8(logits.double().sigmoid())


def uint8_to_logits(q):
    """uint8 probabilities (torch) -> float32 logits with ``sigmoid = q / 255``.

    ``0`` -> ``-inf`` and ``255`` -> ``+inf`` (exact probabilities 0 and 1), and
    ``logit > 0`` iff ``q >= 128``. The metrics module takes logits.
    """
    p = q.double() / 255.0
    return (p.log() - (-p).log1p()).float()


# ----------------------------------------------------------------------------- files
@dataclass(frozen=True)
class Predictions:
    """One run's predictions of one condition: memory-mapped probabilities + index."""

    probs: np.ndarray  # uint8 [N, 5, S, S]
    videos: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.videos)


def write_index(path: str | Path, videos: Sequence[str], categories: Sequence[str]) -> None:
    """The predictions ``index.tsv`` (``row, video, category``)."""
    write_row_index(path, PREDICTION_COLUMNS, zip(videos, categories, strict=True))


def read_prediction_index(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(videos, categories) of a predictions ``index.tsv``, checked row by row."""
    rows = read_index(path, PREDICTION_COLUMNS, "predictions index is missing")
    return tuple(r["video"] for r in rows), tuple(r["category"] for r in rows)


class PredictionWriter:
    """Write ``{run}.npy`` row by row through a temporary memory map, renamed on success
    (its space reserved first: a full disk raises :class:`~avsrobust.errors.DiskFull`).

    Use as a context manager; rows never written stay 0 (the caller writes all).
    """

    def __init__(self, path: str | Path, n: int, size: int) -> None:
        self.path = Path(path)
        self.shape = (n, N_FRAMES, size, size)
        self._ctx = atomic_path(self.path)
        self._array: np.ndarray | None = None

    def __enter__(self) -> PredictionWriter:
        tmp = self._ctx.__enter__()
        try:
            self._array = npy_memmap(tmp, np.uint8, self.shape)  # space reserved first
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)  # raises DiskFull
            raise
        return self

    def write(self, row: int, q: np.ndarray) -> None:
        assert self._array is not None
        self._array[row : row + len(q)] = q

    def __exit__(self, *exc) -> bool | None:
        if self._array is not None:
            self._array.flush()
            self._array = None  # unmap before rename/unlink
        return self._ctx.__exit__(*exc)


def open_predictions(folder: str | Path, run: str) -> Predictions:
    """Memory-map ``{folder}/{run}.npy`` with ``{folder}/index.tsv``, checking they agree."""
    folder = Path(folder)
    videos, categories = read_prediction_index(folder / INDEX_FILE)
    npy = folder / f"{run}.npy"
    probs = load_npy(npy, "predictions file is missing")
    if probs.dtype != np.uint8 or probs.ndim != 4 or probs.shape[:2] != (len(videos), N_FRAMES):
        raise InputError(
            npy,
            f"expected uint8 [{len(videos)}, {N_FRAMES}, S, S] (rows of {INDEX_FILE}), "
            f"got {probs.dtype} {list(probs.shape)}",
        )
    return Predictions(probs, videos, categories)


# ----------------------------------------------------------------------------- PNG trees
def prediction_png(
    root: str | Path, dataset: str, split: str, condition: str, video: str, category: str, k: int
) -> Path:
    """Where frame ``k`` (1..5) of ``video`` lives in a PNG prediction tree."""
    base = Path(root) / condition / split
    sub = base / category / video if dataset == "s4" else base / video
    return sub / f"{video}_{k}.png"


def export_png(
    preds: Predictions, root: str | Path, dataset: str, split: str, condition: str
) -> int:
    """Write every frame as an 8-bit probability-map PNG (readable by :func:`read_png_tree`).

    Returns the number of files written (each one atomically).
    """
    n = 0
    for i, (video, category) in enumerate(zip(preds.videos, preds.categories, strict=True)):
        for k in range(1, N_FRAMES + 1):
            path = prediction_png(root, dataset, split, condition, video, category, k)
            atomic_write_bytes(path, png_bytes(np.ascontiguousarray(preds.probs[i, k - 1])))
            n += 1
    return n


def _read_png(path: Path, size: int, fmt: str) -> np.ndarray:
    """uint8 [size, size] values of one prediction PNG (binary ones resized nearest)."""
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise InputError(path, "prediction PNG is missing") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"unreadable prediction PNG ({exc})") from None
    mode = img.mode
    if mode in ("P", "PA", "1"):
        arr = np.asarray(img if mode != "PA" else img.getchannel(0))
        arr = (arr != 0).astype(np.uint8)  # palette index / bit: foreground or not
    elif mode in ("L", "LA"):
        arr = np.asarray(img if mode == "L" else img.getchannel(0))
    elif mode in ("I", "I;16", "I;16B", "I;16L"):
        raw = np.asarray(img).astype(np.float64)
        top = 65535.0 if raw.max(initial=0) > 255 else 255.0
        arr = np.rint(raw * 255.0 / top).astype(np.uint8)
    elif mode == "F":
        raw = np.asarray(img, dtype=np.float64)
        if raw.size and (raw.min() < 0 or raw.max() > 1):
            raise InputError(path, "float PNG values must be probabilities in [0, 1]")
        arr = probs_to_uint8(raw)
    else:  # RGB(A), CMYK, ...: grey if the channels agree, else any coloured pixel is foreground
        rgb = np.asarray(img.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = np.ascontiguousarray(rgb[..., 0])
        else:
            arr = rgb.any(axis=-1).astype(np.uint8)
    values = np.unique(arr)
    binary = bool(np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all())
    if fmt == "mask":
        arr = np.where(arr != 0, 255, 0).astype(np.uint8)
        binary = True
    if arr.shape != (size, size):
        resample = Image.Resampling.NEAREST if binary else Image.Resampling.BILINEAR
        arr = np.asarray(Image.fromarray(arr).resize((size, size), resample), dtype=np.uint8)
    return arr


def read_png_tree(
    root: str | Path,
    dataset: str,
    split: str,
    condition: str,
    videos: Sequence[str],
    categories: Sequence[str],
    size: int,
    out: str | Path,
    fmt: str = "auto",
) -> dict[str, object]:
    """Import a PNG prediction tree (one condition) into ``out`` (a ``{run}.npy``).

    ``fmt``: ``mask`` (nonzero = foreground), ``probability`` (0..255 = p * 255) or
    ``auto``: probability maps, except that a folder whose PNGs hold only 0 and 1
    is read as 0/1 masks (so 1 means foreground, not p = 1/255). Files of another
    size are resized to ``size`` (nearest for masks, bilinear for probabilities).
    A missing or unreadable file raises InputError naming it; nothing is written then.
    """
    if fmt not in PNG_FORMATS:
        raise ConfigError(f"prediction PNG format must be one of {PNG_FORMATS}, got {fmt!r}")
    folder = Path(root) / condition
    if not folder.is_dir():
        raise InputError(
            folder, f"no {condition} prediction folder (expected {folder}/{split}/...)"
        )
    n = len(videos)
    top = 0
    with PredictionWriter(out, n, size) as writer:
        array = writer._array
        assert array is not None
        for i, (video, category) in enumerate(zip(videos, categories, strict=True)):
            for k in range(1, N_FRAMES + 1):
                path = prediction_png(root, dataset, split, condition, video, category, k)
                arr = _read_png(path, size, fmt)
                array[i, k - 1] = arr
                top = max(top, int(arr.max(initial=0)))
        if fmt == "auto" and top == 1:  # 0/1 masks throughout: 1 is foreground
            for i in range(n):
                array[i] = array[i] * 255
    return {"files": n * N_FRAMES, "binary_01": fmt == "auto" and top == 1}
