"""Figures of the report: FPR per negative type, G-metrics, and a qualitative grid.

Each figure answers one question of the benchmark:
``fpr_by_type``: does the model still segment something when nothing sounds?
``g_metrics``: what does robustness cost (or gain) under the original audio, and under
the mixture (own sound plus a distracting off-screen one), where the mask must stay?
``qualitative``: what do the masks look like, same frame, every audio condition?

Matplotlib with the Agg backend (no display), files written atomically with
no timestamp metadata, so the same inputs give the same PNG bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .frame_cache import FrameCache  # noqa: E402
from .layout import is_negative  # noqa: E402
from .predictions import Predictions  # noqa: E402

_GT = np.array([0.1, 1.0, 0.2])  # ground-truth outline


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def _grouped_bars(ax, groups: Sequence[str], series: Mapping[str, tuple[list, list]]) -> None:
    """Bars per group (x) and series (colour), with std error bars where known."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, (means, stds)) in enumerate(series.items()):
        m = [np.nan if v is None else v for v in means]
        err = None if all(v is None for v in stds) else [v or 0.0 for v in stds]
        ax.bar(x + (j - (n - 1) / 2) * width, m, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(x, groups)


def _datasets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["dataset"] for r in rows))


def fpr_by_type(rows: Sequence[Mapping[str, Any]], negatives: Sequence[str], path: str | Path):
    """One panel per dataset: FPR of every negative type, one bar per experiment
    (``negatives``: the configured generated types; positive-kind ones have no FPR)."""
    negatives = [t for t in negatives if is_negative(t)]
    datasets = _datasets(rows)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        series = {
            r["experiment"]: (
                [r.get(f"fpr_{t}") for t in negatives],
                [r.get(f"fpr_{t}_std") for t in negatives],
            )
            for r in rows
            if r["dataset"] == ds
        }
        _grouped_bars(ax, list(negatives), series)
        ax.set_title(f"{ds.upper()}: false positives under negative audio")
        ax.set_ylabel("FPR (predicted foreground fraction)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def g_metrics(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """One panel per dataset: mIoU, F (positive audio), mIoU and F under the mixture when
    scored, and G-mIoU, G-F, one bar per experiment."""
    mixture = any(r.get("miou_mixture") is not None for r in rows)
    keys = (
        ("miou", "mIoU"),
        ("fscore", "F"),
        *((("miou_mixture", "mIoU mix"), ("fscore_mixture", "F mix")) if mixture else ()),
        ("g_miou", "G-mIoU"),
        ("g_f", "G-F"),
    )
    datasets = _datasets(rows)
    width = 4.5 + 1.2 * mixture
    fig, axes = plt.subplots(1, len(datasets), figsize=(width * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        series = {
            r["experiment"]: ([r.get(k) for k, _ in keys], [r.get(f"{k}_std") for k, _ in keys])
            for r in rows
            if r["dataset"] == ds
        }
        _grouped_bars(ax, [h for _, h in keys], series)
        ax.set_title(f"{ds.upper()}: positive audio{', mixture' if mixture else ''}, G-metrics")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def _overlay(frame: np.ndarray, probs: np.ndarray | None, gt: np.ndarray | None) -> np.ndarray:
    img = frame.astype(np.float64) / 255.0
    if probs is not None:  # the mask in white over a dimmed frame: no colour can hide it
        fg = (probs >= 128)[..., None]
        img = np.where(fg, 0.15 * img + 0.85, 0.3 * img)
    if gt is not None:
        img[_outline(gt == 1)] = _GT
    return img


def qualitative(
    cache: FrameCache | Mapping[str, FrameCache],
    predictions: Mapping[str, Mapping[str, Predictions]],
    conditions: Sequence[str],
    path: str | Path,
    *,
    n_videos: int = 3,
    frame: int = 0,
) -> None:
    """Rows: (experiment, video); columns: the frame with its ground truth, then the
    predicted mask (white over the dimmed frame) under each audio condition; green =
    ground-truth outline.

    ``predictions``: experiment -> condition -> predictions of one run. Videos are
    the first ``n_videos`` of the positive predictions (same for every experiment).
    ``cache``: the split's frame cache, or experiment -> the cache at the size that
    experiment was evaluated at (an imported checkpoint's training size).
    """
    exps = list(predictions)
    caches = cache if isinstance(cache, Mapping) else dict.fromkeys(exps, cache)
    first = predictions[exps[0]]["positive"]
    videos = list(first.videos[:n_videos])
    n_rows, n_cols = len(exps) * len(videos), 1 + len(conditions)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows + 0.4), squeeze=False
    )
    for e, exp in enumerate(exps):
        frames = caches[exp]
        row_of = {v: i for i, v in enumerate(frames.videos)}
        for v, video in enumerate(videos):
            r = e * len(videos) + v
            cr = row_of[video]
            img = np.asarray(frames.frames[cr, frame])
            gt = np.asarray(frames.masks[cr, frame])
            axes[r, 0].imshow(_overlay(img, None, gt))
            axes[r, 0].set_ylabel(f"{exp}\n{video[:11]}", fontsize=7)
            for c, cond in enumerate(conditions, start=1):
                preds = predictions[exp].get(cond)
                probs = None
                if preds is not None and video in preds.videos:
                    probs = np.asarray(preds.probs[preds.videos.index(video), frame])
                # the outline where it is the right answer (positive, mixture)
                axes[r, c].imshow(_overlay(img, probs, None if is_negative(cond) else gt))
                if probs is None:
                    axes[r, c].text(
                        0.5, 0.5, "no audio", ha="center", transform=axes[r, c].transAxes
                    )
    for c, title in enumerate(["frame + GT", *conditions]):
        axes[0, c].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("white: predicted mask; green: ground-truth outline", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
