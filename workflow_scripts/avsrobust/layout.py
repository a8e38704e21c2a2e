"""AVSBench on-disk layout (domain.md section 2) and this project's output paths.

One place knows where S4 and MS3 keep audio, frames and masks, so the same
code reads a real AVSBench copy and the embedded synthetic one, and negative
audio lands in mirror folders that existing AVSBench loaders can read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DATASETS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
#: audio whose correct segmentation is an empty mask (nothing visible sounds)
NEGATIVE_TYPES = ("silence", "noise", "offscreen")
#: every audio type a per-clip job generates (config ``negatives``): the negative types and
#: ``mixture``, the clip's own audio plus its off-screen donor's (its sounding object still
#: sounds, so its correct mask is the original one)
GENERATED_TYPES = (*NEGATIVE_TYPES, "mixture")
#: audio conditions: the original audio, then every generated type
CONDITIONS = ("positive", *GENERATED_TYPES)
#: how each condition is scored, defined once: "positive" (mIoU and F against the original
#: masks, sounding target in training) or "negative" (FPR; empty target in training)
CONDITION_KIND = {
    "positive": "positive",
    **{t: "negative" for t in NEGATIVE_TYPES},
    "mixture": "positive",
}
#: generated types built from the off-screen plan's donor (its WAV is a declared input)
DONOR_TYPES = ("offscreen", "mixture")


def is_negative(condition: str) -> bool:
    """True when ``condition``'s correct mask is empty (scored with FPR)."""
    return CONDITION_KIND[condition] == "negative"


#: frames (and masks, and audio examples) per clip: AVSBench samples 5 s at 1 frame/s
N_FRAMES = 5

#: dataset -> folder under the AVSBench root
DATASET_DIRS = {"s4": "Single-source", "ms3": "Multi-sources"}
#: dataset -> the data folder below it
DATA_DIRS = {"s4": "Single-source/s4_data", "ms3": "Multi-sources/ms3_data"}
#: data folder -> dataset (the inverse of DATA_DIRS: per-clip jobs are named by folder)
DATASET_OF_DATA_DIR = {v: k for k, v in DATA_DIRS.items()}
META_FILES = {"s4": "Single-source/s4_meta_data.csv", "ms3": "Multi-sources/ms3_meta_data.csv"}
AVSS_META = "AVSS/metadata.csv"

# YouTube-style ids and AVSBench category names: letters, digits, '_', '-', '.'
# (a leading '-' is legal); never a path separator, never '.' or '..'.
_SAFE_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


def check_id(value: str, what: str, where: str | Path, row: int | None = None) -> str:
    """Return ``value`` if it is safe as one path component, else raise InputError."""
    if not isinstance(value, str) or not value:
        raise InputError(where, f"empty {what}", row)
    if "/" in value or "\\" in value or value in (".", "..") or ".." in value:
        raise InputError(where, f"{what} {value!r} contains a path separator or '..'", row)
    if not _SAFE_ID.fullmatch(value):
        raise InputError(
            where, f"{what} {value!r} has characters other than letters, digits, '_', '-', '.'", row
        )
    return value


@dataclass(frozen=True)
class Clip:
    """One video of one dataset: enough to find its files and its sound groups."""

    dataset: str
    split: str
    video: str
    category: str  # S4 category; "" for MS3
    groups: frozenset[str]  # sound groups of the sounding objects

    @property
    def item(self) -> str:
        """Path of the clip below ``{split}/`` in the audio folders (no suffix)."""
        return f"{self.category}/{self.video}" if self.dataset == "s4" else self.video


# The paths below are built with one Path(...) call, not a chain of "/": 2.6x faster, and
# the DAG builds ~50,000 of them (check_inputs declares every frame and mask).
def positive_wav(root: str | Path, clip: Clip) -> Path:
    return Path(root, DATA_DIRS[clip.dataset], "audio_wav", clip.split, f"{clip.item}.wav")


def frame_png(root: str | Path, clip: Clip, k: int) -> Path:
    if clip.dataset == "s4":
        return Path(
            root,
            DATA_DIRS["s4"],
            "visual_frames",
            clip.split,
            clip.category,
            clip.video,
            f"{clip.video}_{k}.png",
        )
    return Path(root, DATA_DIRS["ms3"], "visual_frames", clip.video, f"{clip.video}.mp4_{k}.png")


def mask_png(root: str | Path, clip: Clip, k: int) -> Path:
    sub = f"{clip.category}/{clip.video}" if clip.dataset == "s4" else clip.video
    return Path(root, DATA_DIRS[clip.dataset], "gt_masks", clip.split, sub, f"{clip.video}_{k}.png")


def annotated_frames(clip: Clip) -> tuple[int, ...]:
    """AVSBench annotates only the first frame of S4 train clips; all 5 elsewhere."""
    return (1,) if (clip.dataset == "s4" and clip.split == "train") else (1, 2, 3, 4, 5)


def clip_images(root: str | Path, clip: Clip) -> list[Path]:
    """Every PNG of a clip that is read (the 5 frames, then the annotated masks)."""
    frames = [frame_png(root, clip, k) for k in range(1, N_FRAMES + 1)]
    return frames + [mask_png(root, clip, k) for k in annotated_frames(clip)]


def negative_wav(results: str | Path, dataset: str, negtype: str, split: str, item: str) -> Path:
    """Robust output mirroring AVSBench: ``{results}/robust/<data dir>/audio_wav_{negtype}/...``."""
    return Path(results, "robust", DATA_DIRS[dataset], f"audio_wav_{negtype}", split, f"{item}.wav")


def condition_wav(root: str | Path, results: str | Path, clip: Clip, condition: str) -> Path:
    """The WAV a clip has under ``condition`` ('positive' or a generated type)."""
    if condition == "positive":
        return positive_wav(root, clip)
    return negative_wav(results, clip.dataset, condition, clip.split, clip.item)
