"""Decode AVSBench frames and masks once into a compact, memory-mapped cache.

Why: a training epoch would otherwise decode 5 PNG frames and up to 5 PNG masks
per clip, every epoch, in every worker. The cache holds, per (dataset, split):

- ``frames.npy`` uint8 [N, 5, S, S, 3]: RGB frames resized bilinearly to S;
- ``masks.npy``  uint8 [N, 5, S, S]: 1 = sounding object, 0 = background,
  :data:`IGNORE` (255) on every pixel of a frame without annotation (S4 train
  frames 2-5), so "no annotation" can never be mistaken for "empty mask";
- ``index.tsv``: a row index (:mod:`avsrobust.row_index`) with ``row, video, category,
  split`` in the order of ``clips``.

Files are plain ``.npy`` (no pickle), written through memory maps whose space is
reserved first (:func:`~avsrobust.atomic.npy_memmap`) under temporary names and
renamed at the end (``index.tsv`` last), so a killed job leaves no cache a rerun
would trust, a full disk says so, and the same inputs give the same bytes.
This module does not import torch: the cache job stays light.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path, naming, npy_memmap
from .errors import InputError
from .layout import N_FRAMES, Clip, annotated_frames, frame_png, mask_png
from .png import FRAME_MODES, MASK_MODES, open_image
from .readahead import read_ahead
from .row_index import FRAME_CACHE_COLUMNS, index_text, read_index

IGNORE = 255  #: mask value of frames without annotation
FRAMES_FILE = "frames.npy"
MASKS_FILE = "masks.npy"
INDEX_FILE = "index.tsv"


def load_frame(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB, resized bilinearly (PIL) when the file differs."""
    img = open_image(Path(path), modes=FRAME_MODES).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_mask(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size] in {0, 1}: any nonzero pixel (or palette index) is foreground.

    AVSBench masks come as 0/255 greyscale or as palette images (index 0 =
    background); RGB(A) masks count a pixel as foreground when any colour
    channel is nonzero (alpha ignored). Resized nearest-neighbour, so the mask
    stays binary.
    """
    img = open_image(Path(path), modes=MASK_MODES)
    if img.mode == "P":
        arr = np.asarray(img)
    elif img.mode == "PA":
        arr = np.asarray(img)[..., 0]
    elif img.mode in ("1", "L", "I", "I;16"):
        arr = np.asarray(img)
    else:  # RGB, RGBA, LA
        arr = np.asarray(img.convert("RGB")).any(axis=-1)
    binary = (arr != 0).astype(np.uint8)
    if binary.shape != (size, size):
        resized = Image.fromarray(binary).resize((size, size), Image.Resampling.NEAREST)
        binary = np.asarray(resized, dtype=np.uint8)
    return binary


def load_clip_masks(root: str | Path, clip: Clip, size: int) -> np.ndarray:
    """masks [5, S, S] of one clip: 0/1 on annotated frames, IGNORE on the others."""
    masks = np.full((N_FRAMES, size, size), IGNORE, dtype=np.uint8)
    for k in annotated_frames(clip):
        masks[k - 1] = load_mask(mask_png(root, clip, k), size)
    return masks


def load_clip_images(root: str | Path, clip: Clip, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames [5, S, S, 3], masks [5, S, S]) of one clip; IGNORE where not annotated."""
    frames = np.stack([load_frame(frame_png(root, clip, k), size) for k in range(1, N_FRAMES + 1)])
    return frames, load_clip_masks(root, clip, size)


def build_cache(
    root: str | Path,
    clips: Iterable[Clip],
    out_dir: str | Path,
    image_size: int,
    *,
    workers: int = 1,
) -> None:
    """Write ``frames.npy``, ``masks.npy`` and ``index.tsv`` for ``clips`` to ``out_dir``.

    Rows follow the order of ``clips`` (metadata order). A missing or unreadable
    PNG raises InputError naming it, and leaves no output and no temporary file.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    clips = list(clips)
    seen: set[tuple[str, str, str]] = set()
    for clip in clips:
        key = (clip.dataset, clip.split, clip.video)
        if key in seen:
            raise ValueError(f"video {clip.video!r} appears twice in the clip list")
        seen.add(key)
    out = Path(out_dir)
    n, s = len(clips), image_size
    # index.tsv is entered first, so it is renamed last: its presence marks a whole cache.
    with (
        atomic_path(out / INDEX_FILE) as tmp_index,
        atomic_path(out / FRAMES_FILE) as tmp_frames,
        atomic_path(out / MASKS_FILE) as tmp_masks,
    ):
        # space reserved first: a full disk raises DiskFull naming the file, not SIGBUS
        frames = npy_memmap(tmp_frames, np.uint8, (n, N_FRAMES, s, s, 3))
        masks = npy_memmap(tmp_masks, np.uint8, (n, N_FRAMES, s, s))
        try:
            # a bounded window decodes ahead in threads: memory stays flat for any split
            decoding = read_ahead(
                lambda clip: load_clip_images(root, clip, s), clips, workers, 4 * workers
            )
            with contextlib.closing(decoding) as decoded:
                for i, (f, m) in enumerate(decoded):
                    frames[i] = f
                    masks[i] = m
            frames.flush()
            masks.flush()
        finally:
            del frames, masks  # unmap before the rename (or the unlink on error)
        rows = ((c.video, c.category, c.split) for c in clips)
        with naming(tmp_index):
            tmp_index.write_text(
                index_text(FRAME_CACHE_COLUMNS, rows), encoding="utf-8", newline=""
            )


@dataclass(frozen=True)
class GroundTruth:
    """What scoring needs of a split: the masks (IGNORE = not annotated) and the videos.

    A frame cache is one (:class:`FrameCache`); the bring-your-own-predictions CLI
    builds one straight from an AVSBench copy (:func:`avsrobust.byo.load_ground_truth`).
    """

    masks: np.ndarray  # uint8 [N, 5, S, S]; IGNORE = not annotated
    videos: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.videos)


@dataclass(frozen=True)
class FrameCache(GroundTruth):
    """An opened cache: read-only memory maps plus the row -> video index."""

    frames: np.ndarray  # uint8 [N, 5, S, S, 3], memory-mapped
    splits: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[2])


def read_cache_index(path: str | Path) -> list[dict[str, str]]:
    """Rows of a cache ``index.tsv``, checked (columns, consecutive 0-based rows)."""
    return read_index(
        path, FRAME_CACHE_COLUMNS, "frame cache index is missing (build the cache first)"
    )


def load_npy(path: Path, missing: str = "frame cache file is missing (build the cache first)"):
    """Memory-map a plain .npy (never unpickled); a missing or broken file names itself."""
    if not path.is_file():
        raise InputError(path, missing)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable .npy file ({exc})") from None


def open_cache(out_dir: str | Path) -> FrameCache:
    """Memory-map a cache written by :func:`build_cache` and check it is consistent."""
    out = Path(out_dir)
    rows = read_cache_index(out / INDEX_FILE)
    frames = load_npy(out / FRAMES_FILE)
    masks = load_npy(out / MASKS_FILE)
    n = len(rows)
    if (
        frames.dtype != np.uint8
        or frames.ndim != 5
        or frames.shape[0] != n
        or frames.shape[1] != N_FRAMES
        or frames.shape[2] != frames.shape[3]
        or frames.shape[4] != 3
    ):
        raise InputError(
            out / FRAMES_FILE,
            f"expected uint8 [{n}, {N_FRAMES}, S, S, 3], got {frames.dtype} {frames.shape}",
        )
    if masks.dtype != np.uint8 or masks.shape != frames.shape[:4]:
        raise InputError(
            out / MASKS_FILE,
            f"expected uint8 {list(frames.shape[:4])}, got {masks.dtype} {masks.shape}",
        )
    return FrameCache(
        frames=frames,
        masks=masks,
        videos=tuple(r["video"] for r in rows),
        categories=tuple(r["category"] for r in rows),
        splits=tuple(r["split"] for r in rows),
    )
