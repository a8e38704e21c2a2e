"""Bring your own predictions: score any AVS model's masks on AVSBench-Robust.

Users of other AVS codebases run their model on the original audio and on the
negative audio this workflow generates (``audio_wav_silence`` etc. beside
AVSBench's ``audio_wav``), save the masks as PNGs in AVSBench's ``gt_masks``
layout with one folder per condition, and score them here without Snakemake::

    python workflow_scripts/score_predictions.py --avsbench-root /data/AVSBench \\
        --dataset s4 --split test --predictions my_model/s4 --out my_model_s4.json

The ground truth is read from the AVSBench copy and resized (nearest) to
``--size`` (224, as AVSBench evaluates); predictions are read as in
:func:`avsrobust.predictions.read_png_tree` and scored by the same code as the
workflow's own models (:func:`avsrobust.evaluate.score`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_text
from .errors import ConfigError, InputError
from .frame_cache import GroundTruth, load_clip_masks
from .layout import AVSS_META, CONDITIONS, DATASETS, N_FRAMES, SPLITS, Clip
from .metadata import read_clips
from .metrics import AVSBENCH_BATCH_VIDEOS
from .predictions import PNG_FORMATS, open_predictions, read_png_tree, write_index
from .summary import markdown_text, run_row


def load_ground_truth(root: str | Path, clips: Sequence[Clip], size: int) -> GroundTruth:
    """GT masks of ``clips`` from an AVSBench copy at ``size`` px; missing files are named."""
    masks = np.empty((len(clips), N_FRAMES, size, size), dtype=np.uint8)
    for i, clip in enumerate(clips):
        masks[i] = load_clip_masks(root, clip, size)
    return GroundTruth(masks, tuple(c.video for c in clips), tuple(c.category for c in clips))


def score_tree(
    gt: GroundTruth,
    dataset: str,
    split: str,
    predictions: str | Path,
    conditions: Sequence[str],
    fmt: str = "auto",
    avsbench_batch_videos: int = AVSBENCH_BATCH_VIDEOS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Scores of every condition folder under ``predictions`` plus the G-metrics."""
    from .evaluate import score  # torch: only when scoring

    if "positive" not in conditions:
        raise ConfigError("conditions must include 'positive' (G-metrics need it)")
    size = gt.masks.shape[-1]
    scores: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="avsrobust-byo-") as tmp:
        for cond in conditions:
            folder = Path(tmp) / cond
            info = read_png_tree(
                predictions,
                dataset,
                split,
                cond,
                gt.videos,
                gt.categories,
                size,
                folder / "external.npy",
                fmt,
            )
            write_index(folder / "index.tsv", gt.videos, gt.categories)
            preds = open_predictions(folder, "external")
            scores[cond] = score(
                preds,
                gt,
                cond,
                device=device,
                avsbench_batch_videos=avsbench_batch_videos,
                where=str(Path(predictions) / cond),
            )
            scores[cond]["png"] = info
            del preds
    negatives = [c for c in conditions if c != "positive"]
    row = run_row(scores, negatives) if negatives else {"miou": scores["positive"]["miou"]}
    return {"dataset": dataset, "split": split, "size": size, "conditions": scores, "summary": row}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score_predictions.py",
        description="Score PNG predictions (AVSBench gt_masks layout, one folder per audio "
        "condition) on AVSBench-Robust: mIoU, F, FPR per negative type, G-mIoU, G-F.",
    )
    p.add_argument("--avsbench-root", required=True, help="AVSBench copy with the ground truth")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--predictions", required=True, help="folder holding positive/, silence/, ... sub-folders"
    )
    p.add_argument(
        "--conditions",
        nargs="+",
        choices=CONDITIONS,
        help="conditions to score (default: positive + every negative folder present)",
    )
    p.add_argument("--size", type=int, default=224, help="evaluation size in px (default 224)")
    p.add_argument("--format", default="auto", choices=PNG_FORMATS)
    p.add_argument("--avss", default="", help=f"AVSS metadata for MS3 (default <root>/{AVSS_META})")
    p.add_argument(
        "--avsbench-batch-videos",
        type=int,
        default=AVSBENCH_BATCH_VIDEOS,
        help=f"videos per batch of the published F-score (default {AVSBENCH_BATCH_VIDEOS}, "
        "as AVSBench's test.sh)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", help="write the scores as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root, preds = Path(args.avsbench_root), Path(args.predictions)
    conditions = args.conditions or [
        c for c in CONDITIONS if c == "positive" or (preds / c).is_dir()
    ]
    try:
        if args.size < 8:
            raise ConfigError(f"--size must be >= 8, got {args.size}")
        avss = args.avss or str(root / AVSS_META)
        clips = [c for c in read_clips(root, args.dataset, avss) if c.split == args.split]
        if not clips:
            raise InputError(root, f"no {args.dataset} clips in split {args.split!r}")
        gt = load_ground_truth(root, clips, args.size)
        result = score_tree(
            gt,
            args.dataset,
            args.split,
            preds,
            conditions,
            args.format,
            args.avsbench_batch_videos,
            args.device,
        )
    except (InputError, ConfigError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    row = {"dataset": args.dataset, "experiment": preds.name, "runs": 1, **result["summary"]}
    negatives = [c for c in conditions if c != "positive"]
    print(markdown_text([row], negatives) if negatives else json.dumps(row, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0
