"""The summary table: one row per (dataset, experiment), mean and spread over runs.

Why computed here and not by hand: the published G-metrics were aggregated by
hand. Here every run (a training seed, or one set of imported predictions) gets
its own G-mIoU and G-F from its own positive and negative scores
(:func:`avsrobust.stats.g_metrics`), and only then are runs averaged. The
spread is the sample standard deviation over runs (``ddof=1``); it is empty
with a single run.

``negatives`` everywhere here is the configured list of generated conditions: the
negative types get FPR columns and enter the G-metrics; a positive-kind one
(``mixture``, :data:`avsrobust.layout.CONDITION_KIND`) gets ``miou_<type>`` and
``fscore_<type>`` columns, scored against the original masks, and stays out of the
G-metrics (they keep the paper's definition).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import InputError
from .layout import DONOR_TYPES, is_negative
from .stats import METRICS_VERSION, g_metrics, mean_std

#: Columns of the Markdown table: (key, header); per-type FPR columns are inserted.
MAIN_COLUMNS = (("miou", "mIoU"), ("fscore", "F"))
G_COLUMNS = (("fpr_mean", "FPR mean"), ("g_miou", "G-mIoU"), ("g_f", "G-F"))

DEFINITIONS = {
    "miou": "mIoU under the original (positive) audio, AVSBench semantics, threshold 0.5; a "
    "mean over frames, equal to the published mean of per-batch means whenever the batch "
    "divides the split (the real test splits at 4 videos per batch); the FPRs likewise",
    "fscore": "F-score as published (AVSBench Eval_Fmeasure, beta^2 = 0.3): per batch of "
    "avsbench_batch_videos videos (default 4, AVSBench's test.sh), the max over 255 thresholds "
    "of the batch's mean curve, then the mean over batches; what papers report",
    "fscore_dataset": "ours, batch independent: max over 255 thresholds of the mean curve over "
    "all frames of the split (no paper reports it)",
    "avsbench_batch_videos": "videos per batch of fscore",
    "fpr_<type>": "false-positive rate under that negative audio: mean predicted-foreground "
    "pixel fraction (correct answer: empty mask; lower is better)",
    "nonempty_<type>": "share of frames with any predicted foreground under that negative audio",
    "visual_bias_<type>": "mIoU of the negative-audio predictions against the original masks "
    "(high = the model segments the visible object although it is silent)",
    "miou_<type>": "mIoU under a positive-kind generated audio (mixture: the clip's own audio "
    "plus its off-screen donor's at negative_audio.mixture_snr_db) against the original masks",
    "fscore_<type>": "F-score (as fscore) under that audio against the original masks",
    "fpr_mean": "mean of the per-type FPRs",
    "g_miou": "sqrt(mIoU * (1 - FPR mean)), per run, then averaged",
    "g_f": "sqrt(F * (1 - FPR mean)), per run, then averaged",
    "std": "sample standard deviation over runs (seeds); empty with one run",
    "videos_split": "videos in the evaluated split",
    "videos_<condition>": "videos scored under that audio condition (off-screen: fewer than "
    "the split when offscreen.on_missing: skip left clips without a legal donor out)",
    "offscreen_fallback": "scored off-screen clips whose donor is a fallback (policy fallback: "
    "no legal donor existed, a random other clip of the split was used)",
}


def _load_json(path: str | Path, what: str, keys: Sequence[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"{what} file is missing") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable {what} JSON ({exc})") from None
    for key in keys:
        if key not in doc:
            raise InputError(path, f"{what} JSON lacks {key!r}")
    return doc


def load_condition(path: str | Path) -> dict[str, Any]:
    """A ``{condition}.json`` written by the evaluation job, minimally checked."""
    return _load_json(path, "metrics", ("dataset", "experiment", "condition", "runs"))


def load_summary(path: str | Path) -> dict[str, Any]:
    """A ``summary.json`` written by :func:`write_summary` (the figures are drawn from it)."""
    return _load_json(path, "summary", ("negatives", "rows"))


def _negative(types: Sequence[str]) -> list[str]:
    """The negative types of ``types`` (FPR columns, G-metrics)."""
    return [t for t in types if is_negative(t)]


def _mixed(types: Sequence[str]) -> list[str]:
    """The positive-kind generated types of ``types`` (mIoU and F columns)."""
    return [t for t in types if not is_negative(t)]


def run_row(scores: Mapping[str, Mapping[str, Any]], negatives: Sequence[str]) -> dict[str, Any]:
    """One run's flat row from its per-condition scores (``condition -> scores``)."""
    pos = scores["positive"]
    row: dict[str, Any] = {
        "miou": pos.get("miou"),
        "fscore": pos.get("fscore"),
        "fscore_dataset": pos.get("fscore_dataset"),
    }
    fprs: dict[str, float] = {}
    for t in _mixed(negatives):
        row[f"miou_{t}"] = scores[t].get("miou")
        row[f"fscore_{t}"] = scores[t].get("fscore")
    for t in _negative(negatives):
        s = scores[t]
        row[f"fpr_{t}"] = s.get("fpr")
        row[f"nonempty_{t}"] = s.get("nonempty_rate")
        row[f"visual_bias_{t}"] = s.get("visual_bias_miou")
        if s.get("fpr") is not None:
            fprs[t] = s["fpr"]
    if row["miou"] is not None and fprs and len(fprs) == len(_negative(negatives)):
        g = g_metrics(row["miou"], row["fscore"], fprs)
        row.update(fpr_mean=g["fpr_negative"], g_miou=g["g_miou"], g_f=g["g_f"])
    else:
        row.update(fpr_mean=None, g_miou=None, g_f=None)
    return row


def experiment_row(
    docs: Mapping[str, Mapping[str, Any]],
    negatives: Sequence[str],
    videos_split: int | None = None,
    offscreen_fallback: int | None = None,
) -> dict[str, Any]:
    """Mean and std over the runs that every condition of one experiment has.

    ``videos_split`` (videos in the evaluated split) and ``offscreen_fallback``
    (scored off-screen clips with a fallback donor) go into the row with the
    number of videos each condition scored.
    """
    first = docs["positive"]
    names = [r for r in first["runs"] if all(r in docs[c]["runs"] for c in docs)]
    if not names:
        raise InputError(
            f"{first['dataset']}/{first['experiment']}", "no run is scored under every condition"
        )
    rows = {
        r: run_row({c: docs[c]["runs"][r] for c in ("positive", *negatives)}, negatives)
        for r in names
    }
    keys = list(next(iter(rows.values())))
    out: dict[str, Any] = {
        "dataset": first["dataset"],
        "experiment": first["experiment"],
        "source": first.get("source", {}).get("kind", "model"),
        "runs": len(names),
        "run_names": names,
    }
    for k in keys:
        m, s = mean_std([rows[r][k] for r in names])
        out[k], out[f"{k}_std"] = m, s
    pos_run = first["runs"][names[0]]
    out["avsbench_batch_videos"] = pos_run.get("avsbench_batch_videos")
    out["videos_split"] = videos_split
    for c in ("positive", *negatives):
        out[f"videos_{c}"] = docs[c]["runs"][names[0]].get("n_videos")
    donors = any(t in DONOR_TYPES for t in negatives)
    out["offscreen_fallback"] = offscreen_fallback if donors else None
    out["per_run"] = rows
    return out


def count_keys(negatives: Sequence[str]) -> list[str]:
    """Columns that say how many videos were scored (after the metric columns)."""
    keys = ["videos_split", *(f"videos_{c}" for c in ("positive", *negatives))]
    return [*keys, "offscreen_fallback", "avsbench_batch_videos"]


def coverage_text(rows: Sequence[Mapping[str, Any]], negatives: Sequence[str]) -> list[str]:
    """One line per dataset: videos scored per condition, of the split (a reader comparing
    with a paper sees when a condition scored fewer clips than the published set)."""
    lines = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        seen = {
            tuple(r.get(k) for k in count_keys(negatives)): r["experiment"]
            for r in rows
            if r["dataset"] == ds
        }
        for counts, experiment in seen.items():
            c = dict(zip(count_keys(negatives), counts, strict=True))
            total = c["videos_split"]
            parts = []
            for cond in ("positive", *negatives):
                n = c[f"videos_{cond}"]
                if n is None:
                    continue
                part = f"{cond} {n}" + ("" if total is None else f" of {total}")
                if cond in DONOR_TYPES and c["offscreen_fallback"]:
                    part += f" ({c['offscreen_fallback']} with a fallback donor)"
                parts.append(part)
            who = ds if len(seen) == 1 else f"{ds}/{experiment}"
            lines.append(f"- {who}: " + ", ".join(parts))
    return lines


def metric_keys(negatives: Sequence[str]) -> list[str]:
    keys = ["miou", "fscore", "fscore_dataset"]
    for t in _mixed(negatives):
        keys += [f"miou_{t}", f"fscore_{t}"]
    for t in _negative(negatives):
        keys += [f"fpr_{t}", f"nonempty_{t}", f"visual_bias_{t}"]
    return keys + ["fpr_mean", "g_miou", "g_f"]


def _cell(v: Any) -> str:
    return "" if v is None else (f"{v:.6f}" if isinstance(v, float) else str(v))


def tsv_text(rows: Iterable[Mapping[str, Any]], negatives: Sequence[str]) -> str:
    cols = ["dataset", "experiment", "source", "runs"]
    for k in metric_keys(negatives):
        cols += [k, f"{k}_std"]
    cols += count_keys(negatives)
    lines = ["\t".join(cols)]
    lines += ["\t".join(_cell(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def _pm(m: float | None, s: float | None) -> str:
    if m is None:
        return "n/a"
    return f"{m:.3f}" if s is None else f"{m:.3f} ± {s:.3f}"


def markdown_text(
    rows: Sequence[Mapping[str, Any]], negatives: Sequence[str], split: str | None = None
) -> str:
    """The table people read: mean ± std over runs, arrows say which way is better; then
    how many videos each condition scored."""
    cols = [
        *MAIN_COLUMNS,
        *((f"{k}_{t}", f"{h} {t}") for t in _mixed(negatives) for k, h in MAIN_COLUMNS),
        *((f"fpr_{t}", f"FPR {t}") for t in _negative(negatives)),
        *G_COLUMNS,
    ]
    arrow = {k: (" ↓" if k.startswith("fpr") else " ↑") for k, _ in cols}
    head = ["dataset", "experiment", "runs", *(h + arrow[k] for k, h in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["experiment"], str(r["runs"])]
        cells += [_pm(r.get(k), r.get(f"{k}_std")) for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "mIoU and F under the original audio (higher is better); FPR = mean predicted-foreground "
        "pixel fraction under negative audio, where the correct mask is empty (lower is better); "
        "G-mIoU = sqrt(mIoU x (1 - mean FPR)), G-F likewise, per run. "
        "Values: mean ± sample std over runs (seeds).",
    ]
    if _mixed(negatives):
        lines += [
            "",
            "mIoU and F mixture: under the clip's own audio plus its off-screen donor's "
            "(negative_audio.mixture_snr_db), against the original masks: the sounding object "
            "still sounds, so a robust model should keep its mask (higher is better; not part "
            "of the G-metrics).",
        ]
    batches = sorted({r["avsbench_batch_videos"] for r in rows if r.get("avsbench_batch_videos")})
    if batches:
        lines += [
            "",
            "F is the published AVSBench F-score (per batch of "
            f"{' / '.join(map(str, batches))} videos, max over 255 thresholds of the batch's "
            "mean curve, then the mean over batches); the batch-independent variant is "
            "`fscore_dataset` in summary.tsv.",
        ]
    coverage = coverage_text(rows, negatives) if any("videos_split" in r for r in rows) else []
    if coverage:
        where = f"{split} split" if split else "evaluated split"
        lines += ["", f"Videos scored per audio condition ({where}):", "", *coverage]
    return "\n".join(lines) + "\n"


def write_summary(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    negatives: Sequence[str],
    split: str,
) -> None:
    """``summary.tsv``, ``summary.md`` and ``summary.json`` (each written atomically)."""
    out = Path(out_dir)
    atomic_write_text(out / "summary.tsv", tsv_text(rows, negatives))
    atomic_write_text(out / "summary.md", markdown_text(rows, negatives, split))
    doc = {
        "metrics_version": METRICS_VERSION,
        "split": split,
        "negatives": list(negatives),
        "definitions": DEFINITIONS,
        "rows": list(rows),
    }
    atomic_write_text(out / "summary.json", json.dumps(doc, indent=2) + "\n")
