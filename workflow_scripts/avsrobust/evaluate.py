"""Evaluation: predictions of one (model, condition), and their scores.

Two steps, kept apart on purpose (:func:`evaluate_model` runs both for one model under
every audio condition: the workflow's ``evaluate`` job):

1. :func:`predict` runs a trained model over one audio condition of a split and
   writes its probabilities in the compact format of :mod:`avsrobust.predictions`;
2. :func:`score` reads saved predictions (ours or imported PNGs) and the frame
   cache's ground truth and streams them through :mod:`avsrobust.metrics`.

So a number in a table never depends on whether the masks came from this
workflow's models or from another codebase.

What :func:`score` reports (definitions in :mod:`avsrobust.metrics`):

* ``positive`` and every positive-kind condition (``mixture``: layout.CONDITION_KIND),
  against the original masks: ``miou``, ``fscore`` (the published AVSBench ``Eval_Fmeasure``:
  per batch of ``avsbench_batch_videos`` videos, default 4 as AVSBench's
  ``test.sh``, the max over 255 thresholds of the batch's mean F curve, then
  the mean over batches; what papers report), ``fscore_dataset`` (ours: the
  max of the mean curve over every frame of the set, batch independent),
  ``avsbench_batch_videos``, ``n_videos``, ``n_frames`` (annotated frames);
* a negative type: ``fpr``, ``nonempty_rate`` (frames), ``visual_bias_miou``
  (predictions under negative audio against the original masks), ``n_videos``,
  ``n_frames``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .atomic import atomic_write_text
from .data import AVSDataset, build_loader, read_feature_index
from .errors import ConfigError, InputError
from .frame_cache import IGNORE, GroundTruth, open_cache
from .layout import is_negative
from .metrics import AVSBENCH_BATCH_VIDEOS, FPRMeter, FScoreMeter, IoUMeter
from .models import build_model
from .predictions import (
    INDEX_FILE,
    Predictions,
    PredictionWriter,
    logits_to_uint8,
    open_predictions,
    read_png_tree,
    uint8_to_logits,
    write_index,
)
from .stats import METRICS_VERSION, json_float, mean_std
from .step import flatten_batch, predict_logits
from .train_config import resolve_config

#: ``evaluation:`` defaults of config/schema.yaml for direct callers (the workflow passes
#: the configured values); a test checks they equal the schema's (``AVSBENCH_BATCH_VIDEOS``,
#: from :mod:`avsrobust.metrics`, too).
BATCH_SIZE = 8


# ----------------------------------------------------------------------------- models
def load_checkpoint(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model from a ``best.pt``/``final.pt`` written by :func:`avsrobust.train.train`.

    Loaded with ``weights_only=True`` (no unpickling of arbitrary objects); the
    model is rebuilt from the config stored in the file, which is returned completed
    with the training defaults (:func:`~avsrobust.train_config.resolve_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint is missing")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(path, f"not a readable checkpoint ({exc})") from None
    if not isinstance(ck, dict) or "model" not in ck or "cfg" not in ck:
        raise InputError(path, "not a training checkpoint (needs 'model' and 'cfg')")
    try:
        cfg = resolve_config(ck["cfg"])
    except ConfigError as exc:
        raise InputError(path, f"checkpoint config is not a training config ({exc})") from None
    # Pretrained weight files only matter for initialisation; the state dict has the weights.
    model = build_model(cfg["model"], load_pretrained=False)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit the model in its config ({exc})") from None
    return model.to(device).eval(), cfg


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: AVSDataset,
    condition: str,
    out_dir: str | Path,
    run: str,
    device: torch.device,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    amp: bool = True,
    channels_last: bool = True,
    gate: bool = False,
    progress: bool = False,
) -> Predictions:
    """Write ``{out_dir}/{run}.npy`` (+ ``index.tsv``) with the model's probabilities.

    Rows are the videos that have ``condition`` audio, in frame-cache order.
    ``gate``: empty the masks of frames the classifier head calls silent.
    """
    items = dataset.items(condition)
    out_dir = Path(out_dir)
    videos = tuple(dataset.videos[i] for i, _ in items)
    categories = tuple(dataset.categories[i] for i, _ in items)
    loader = build_loader(dataset, items, batch_size, workers, device, seed=0)
    cl = channels_last and device.type == "cuda"
    model.eval()
    row = 0
    with PredictionWriter(out_dir / f"{run}.npy", len(items), dataset.image_size) as writer:
        for batch in tqdm(loader, desc=f"{run} {condition}", disable=not progress, unit="batch"):
            x = flatten_batch(batch, device, cl)
            logits = predict_logits(model, x, device, amp=amp, gate=gate)
            b, t = batch["frames"].shape[:2]
            q = logits_to_uint8(logits).reshape(b, t, *logits.shape[-2:]).cpu().numpy()
            writer.write(row, q)
            row += b
    write_index(out_dir / INDEX_FILE, videos, categories)
    return open_predictions(out_dir, run)


# ----------------------------------------------------------------------------- scoring
def _rows_in_cache(preds: Predictions, cache: GroundTruth, where: str) -> np.ndarray:
    """Cache row of every prediction row; the videos must be cached with the same category."""
    pos = {v: i for i, v in enumerate(cache.videos)}
    rows = np.empty(len(preds), dtype=np.int64)
    for j, (video, category) in enumerate(zip(preds.videos, preds.categories, strict=True)):
        i = pos.get(video)
        if i is None:
            raise InputError(where, f"video {video!r} is not in the evaluated split", j + 2)
        if cache.categories[i] != category:
            raise InputError(
                where,
                f"video {video!r} has category {category!r}, the split says "
                f"{cache.categories[i]!r}",
                j + 2,
            )
        rows[j] = i
    return rows


def score(
    preds: Predictions,
    cache: GroundTruth,
    condition: str,
    *,
    device: torch.device | str = "cpu",
    avsbench_batch_videos: int = AVSBENCH_BATCH_VIDEOS,
    chunk_videos: int = 32,
    where: str = "predictions",
) -> dict[str, Any]:
    """Metrics of one condition's predictions against the ground truth (a frame cache or
    masks read from an AVSBench copy), streaming.

    ``avsbench_batch_videos``: videos per batch of the published F-score, in
    cache (metadata) order with a smaller last batch, as AVSBench's test loader
    (``test.sh --test_batch_size 4``; its ``test.py`` default is 1). mIoU and FPR
    are means over frames: they equal the published means of per-batch means
    whenever the batch divides the split (740 S4 and 64 MS3 test videos at 4).
    Predictions must be at the ground truth's size.
    """
    device = torch.device(device)
    if preds.probs.shape[2:] != cache.masks.shape[2:]:
        raise InputError(
            where,
            f"predictions are {list(preds.probs.shape[2:])} px, the ground truth "
            f"{list(cache.masks.shape[2:])} px (import PNGs with the evaluation size)",
        )
    if avsbench_batch_videos < 1:
        raise ConfigError(f"avsbench_batch_videos must be >= 1, got {avsbench_batch_videos}")
    rows = _rows_in_cache(preds, cache, where)
    step = max(chunk_videos // avsbench_batch_videos, 1) * avsbench_batch_videos
    # positive and mixture: scored against the original masks (the sounding object still
    # sounds); negative types: the correct mask is empty
    positive = not is_negative(condition)
    iou, f_ds, f_pub, fpr = IoUMeter(), FScoreMeter("dataset"), FScoreMeter("avsbench"), FPRMeter()
    for start in range(0, len(rows), step):
        sel = rows[start : start + step]
        q = torch.from_numpy(np.array(preds.probs[start : start + step])).to(device)
        raw = torch.from_numpy(np.stack([np.asarray(cache.masks[i]) for i in sel])).to(device)
        logits = uint8_to_logits(q).flatten(0, 1)  # [b*T, S, S]
        gt = (raw == 1).flatten(0, 1)
        valid = (raw != IGNORE).flatten(2).all(dim=2).flatten()
        # positive kind: scored against the masks; negative: the target is empty, and
        # the original masks measure visual bias
        iou.update(logits, gt, valid)
        if positive:
            f_ds.update(logits, gt, valid)
            t = raw.shape[1]
            for b in range(0, len(sel), avsbench_batch_videos):
                s = slice(b * t, (b + avsbench_batch_videos) * t)
                f_pub.update(logits[s], gt[s], valid[s])
        else:
            fpr.update(logits)
    n_videos = int(len(rows))
    if positive:
        return {
            "miou": json_float(iou.compute()),
            "fscore": json_float(f_pub.compute()),
            "fscore_dataset": json_float(f_ds.compute()),
            "avsbench_batch_videos": avsbench_batch_videos,
            "n_videos": n_videos,
            "n_frames": iou.n_frames,
        }
    r = fpr.compute()
    return {
        "fpr": json_float(r["fpr"]),
        "nonempty_rate": json_float(r["nonempty_rate"]),
        "visual_bias_miou": json_float(iou.compute()),
        "n_videos": n_videos,
        "n_frames": r["n_frames"],
    }


def _say(log: Callable[[str], Any] | logging.Logger | None) -> Callable[[str], Any]:
    return log.info if isinstance(log, logging.Logger) else (log or (lambda _m: None))


def evaluate_runs(
    runs: Mapping[str, Callable[[], Predictions]],
    cache: GroundTruth,
    condition: str,
    *,
    device: torch.device | str = "cpu",
    avsbench_batch_videos: int = AVSBENCH_BATCH_VIDEOS,
    log: Callable[[str], Any] | logging.Logger | None = None,
) -> dict[str, dict[str, Any]]:
    """Score every run (``run name -> function that makes or opens its predictions``)."""
    say = _say(log)
    out: dict[str, dict[str, Any]] = {}
    for run, make in runs.items():
        preds = make()
        out[run] = score(
            preds,
            cache,
            condition,
            device=device,
            avsbench_batch_videos=avsbench_batch_videos,
            where=f"{run} {condition} predictions",
        )
        say(f"{run} {condition}: {out[run]}")
    return out


def condition_document(
    dataset: str,
    experiment: str,
    condition: str,
    split: str,
    runs: Mapping[str, Mapping[str, Any]],
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON of ``results/metrics/{dataset}/{experiment}/{condition}.json``."""
    counts = ("n_frames", "n_videos", "avsbench_batch_videos")
    keys: Sequence[str] = sorted({k for r in runs.values() for k in r if k not in counts})
    numeric = [k for k in keys if all(isinstance(r.get(k), float | int) for r in runs.values())]
    stats = {k: mean_std([r[k] for r in runs.values()]) for k in numeric}
    return {
        "dataset": dataset,
        "experiment": experiment,
        "condition": condition,
        "split": split,
        "metrics_version": METRICS_VERSION,
        "source": dict(source),
        "runs": {k: dict(v) for k, v in runs.items()},
        "mean": {k: v[0] for k, v in stats.items()},
        "std": {k: v[1] for k, v in stats.items()},
    }


# ----------------------------------------------------------------------------- one model


def evaluate_model(
    p: Mapping[str, Any],
    *,
    cache_index: str | Path,
    clips: Sequence[str | Path],
    metrics: Sequence[str | Path],
    predictions: Sequence[str | Path],
    features: Sequence[str | Path] | None = None,
    models: Sequence[str | Path] | None = None,
    external: str | Path | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], Any] | logging.Logger | None = None,
) -> dict[str, dict[str, Any]]:
    """Predict and score one (dataset, experiment) under every condition of
    ``p["conditions"]``; returns condition -> the document written to its metrics JSON.

    ``clips``, ``features`` (feature files), ``metrics`` (JSON paths) and ``predictions``
    (folders) are per condition, in ``p["conditions"]`` order. Either ``models`` (one
    checkpoint per run of ``p["runs"]``: each is loaded once and predicts every condition,
    so a model costs one load and, on a cluster, one GPU allocation) or ``external`` (a PNG
    tree, imported per condition at the frame cache's size). The frame cache
    (``cache_index``) must be at the size each model was trained at (its ``image_size``).
    ``p``: ``dataset``, ``experiment``, ``split``, ``runs``, ``conditions``, ``source``
    (``model`` | ``checkpoint`` | ``external``), ``format`` (PNG format), ``batch_size``,
    ``avsbench_batch_videos`` and, for ``checkpoint``, ``checkpoint_format``, ``image_size``.
    """
    say = _say(log)
    conditions = list(p["conditions"])
    per_condition = {"clips": clips, "metrics": metrics, "predictions": predictions}
    if features is not None:
        per_condition["features"] = features
    for what, files in per_condition.items():
        if len(files) != len(conditions):
            raise ConfigError(f"{len(files)} {what} for {len(conditions)} conditions")
    if (models is None) == (external is None):
        raise ConfigError("give either the models or an external prediction folder")
    device = torch.device(device)
    cache_dir = Path(cache_index).parent
    cache = open_cache(cache_dir)
    out_dirs = [Path(d) for d in predictions]
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
    runs = list(p["runs"])
    say(
        f"{p['dataset']}/{p['experiment']} on {device}, {p['split']} split at "
        f"{cache.image_size} px, runs {runs}, conditions {conditions}"
    )

    makers: dict[str, dict[str, Callable[[], Predictions]]] = {c: {} for c in conditions}
    if external is not None:
        root = Path(external)
        for cond, listed_in, out_dir in zip(conditions, clips, out_dirs, strict=True):
            listed = read_feature_index(listed_in)  # videos with this condition's audio
            rows = [i for i, v in enumerate(cache.videos) if v in listed]

            def make_external(cond=cond, out_dir=out_dir, rows=rows) -> Predictions:
                videos = [cache.videos[i] for i in rows]
                categories = [cache.categories[i] for i in rows]
                info = read_png_tree(
                    root,
                    p["dataset"],
                    p["split"],
                    cond,
                    videos,
                    categories,
                    cache.image_size,
                    out_dir / "external.npy",
                    p["format"],
                )
                write_index(out_dir / INDEX_FILE, videos, categories)
                say(f"imported {cond} from {root}: {info}")
                return open_predictions(out_dir, "external")

            makers[cond]["external"] = make_external
        source: dict[str, Any] = {"kind": "external", "path": str(root), "format": p["format"]}
    else:
        assert models is not None
        if features is None:
            raise ConfigError("models are scored on audio features: give the feature files")
        if len(models) != len(runs):
            raise ConfigError(f"{len(models)} checkpoints for runs {runs}")
        files = dict(zip(conditions, zip(features, clips, strict=True), strict=True))
        dataset = AVSDataset(cache_dir, files, conditions)
        imported = {}
        for run, ckpt in zip(runs, models, strict=True):
            model, cfg = load_checkpoint(ckpt, device)
            size = cfg.get("image_size", cache.image_size)
            if size != cache.image_size:
                raise InputError(
                    ckpt,
                    f"trained at {size} px, but the frame cache {cache_dir} is at "
                    f"{cache.image_size} px (a model is evaluated at the size it was trained at)",
                )
            imported = cfg.get("imported") or {}
            for cond, out_dir in zip(conditions, out_dirs, strict=True):
                predict(
                    model,
                    dataset,
                    cond,
                    out_dir,
                    run,
                    device,
                    batch_size=p["batch_size"],
                    amp=cfg["amp"],
                    channels_last=cfg["channels_last"],
                    gate=cfg["gate_with_classifier"],
                    progress=True,
                )
            del model
            for cond, out_dir in zip(conditions, out_dirs, strict=True):
                makers[cond][run] = lambda d=out_dir, r=run: open_predictions(d, r)
        source = {"kind": "model", "checkpoints": list(map(str, models))}
        if p.get("source") == "checkpoint":
            source = {
                "kind": "checkpoint",
                "format": p["checkpoint_format"],
                "image_size": cache.image_size,
                "checkpoints": list(map(str, models)),
                "published": imported.get("checkpoint"),
                "published_sha256": imported.get("checkpoint_sha256"),
                "vggish": imported.get("vggish"),
                "vggish_sha256": imported.get("vggish_sha256"),
            }

    docs = {}
    for cond, path in zip(conditions, metrics, strict=True):
        scores = evaluate_runs(
            makers[cond],
            cache,
            cond,
            device=device,
            avsbench_batch_videos=p["avsbench_batch_videos"],
            log=say,
        )
        doc = condition_document(p["dataset"], p["experiment"], cond, p["split"], scores, source)
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
        say(f"{cond}: mean {doc['mean']}")
        docs[cond] = doc
    return docs
