"""Check an AVSBench copy before anything is built on it: every WAV, frame and mask.

The negative-audio jobs only read WAVs; training (later stages) reads frames and
masks. A missing or broken PNG found here, with its path, saves a failed GPU job
hours later. Headers only: PIL reads the size and mode without decoding pixels.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputError, regular_file
from .layout import N_FRAMES, Clip, annotated_frames, frame_png, mask_png
from .png import FRAME_MODES, MASK_MODES
from .wav import audio_format


def check_png(path: Path, what: str, modes: tuple[str, ...]) -> tuple[int, int]:
    """(width, height) of a readable PNG of one of ``modes``; InputError otherwise.

    Only regular files are opened (a FIFO would block the check forever)."""
    regular_file(path, what)
    try:
        with Image.open(path) as img:
            img.verify()  # structure and CRCs, without decoding
        with Image.open(path) as img:
            size, mode, fmt = img.size, img.mode, img.format
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(path, f"{what} is not a readable image ({exc})") from None
    if fmt != "PNG":
        raise InputError(path, f"{what} is {fmt}, expected PNG")
    if mode not in modes:
        raise InputError(path, f"{what} has mode {mode}, expected one of {list(modes)}")
    return size


def check_clip(root: str | Path, clip: Clip, positive: Path) -> dict[str, str]:
    """Check one clip's WAV, 5 frames and annotated masks; a summary row."""
    fmt = audio_format(positive)
    sizes = {
        k: check_png(frame_png(root, clip, k), f"frame {k}", FRAME_MODES)
        for k in range(1, N_FRAMES + 1)
    }
    # The clip's size is the one most frames have (frame 1's on a tie); name an odd frame.
    (width, height), _ = Counter(sizes.values()).most_common(1)[0]
    for k, size in sizes.items():
        if size != (width, height):
            raise InputError(
                frame_png(root, clip, k),
                f"frame {k} is {size[0]}x{size[1]} px, the clip's other frames {width}x{height}",
            )
    masks = annotated_frames(clip)
    for k in masks:
        size = check_png(mask_png(root, clip, k), f"mask {k}", MASK_MODES)
        if size != (width, height):
            raise InputError(
                mask_png(root, clip, k),
                f"mask size {size} differs from the frames' {(width, height)}",
            )
    return {
        "split": clip.split,
        "video": clip.video,
        "category": clip.category,
        "sample_rate": str(fmt.sample_rate),
        "channels": str(fmt.channels),
        "seconds": f"{fmt.seconds:.3f}",
        "frame_size": f"{width}x{height}",
        "masks": str(len(masks)),
    }


def check_dataset(root: str | Path, clips: list[Clip], positives: list[Path]) -> str:
    """TSV report of every clip; raises InputError listing up to 20 broken files."""
    rows, problems = [], []
    for clip, positive in zip(clips, positives, strict=True):
        try:
            rows.append(check_clip(root, clip, positive))
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        more = "" if len(problems) <= 20 else f"\n... and {len(problems) - 20} more"
        raise InputError(
            Path(root),
            f"{len(problems)} clip(s) with bad files:\n" + "\n".join(problems[:20]) + more,
        )
    buf = io.StringIO()
    columns = [
        "split",
        "video",
        "category",
        "sample_rate",
        "channels",
        "seconds",
        "frame_size",
        "masks",
    ]
    writer = csv.DictWriter(buf, fieldnames=columns, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
