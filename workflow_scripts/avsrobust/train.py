"""Train one audio-visual segmentation model: the epoch loop, validation, metric files.

Why it looks like this (domain.md section 6): the robust recipe mixes negative audio with
empty targets into every epoch (:class:`~avsrobust.data.RobustSampler`, re-drawn per epoch,
any batch size), and cluster jobs get preempted, so a run must resume to *the same* weights
it would have reached uninterrupted. The parts live apart, as MAE keeps its engine apart
from its main: the configuration (:mod:`avsrobust.train_config`), the step every model
plugs into (:mod:`avsrobust.step`, :mod:`avsrobust.cuda_graphs`), the optimizer
(:mod:`avsrobust.optim`), resume and preemption (:mod:`avsrobust.resume`); this module
runs the epochs.

Outputs. ``out_dir/metrics.tsv`` (one row per completed epoch, rewritten atomically) and
``out_dir/metrics.json`` (same rows, ``null`` for NaN, plus best epoch and config); columns:
``epoch`` (1-based count of completed epochs), ``train_items`` and ``train_items_<cond>``
(items actually trained on), ``train_loss`` / ``train_bce`` / ``train_iou`` / ``train_av`` /
``train_sounding`` (means over batches), ``val_miou`` (AVSBench mIoU over every annotated
frame of the positive validation items), ``val_frames``, ``val_fpr_<neg>`` (mean predicted
foreground fraction under that negative audio) and ``val_nonempty_<neg>`` for each negative
condition of ``val_ds``, ``val_score`` (the epoch's :func:`selection_score` under the
config's ``select_by``), ``lr``, ``seconds``. ``out_dir/best.pt`` (the epoch of the best
``val_score``; the first of equals) and ``out_dir/final.pt``; while the run is unfinished,
``ckpt_dir/last.pt`` and ``ckpt_dir/best.pt`` (everything needed to resume, removed when
the run finishes; see :mod:`avsrobust.resume`).

Determinism. On the CPU the final weights equal (``torch.equal``) those of an uninterrupted
run; on CUDA they do as far as the kernels are deterministic (with ``deterministic: true``,
``torch.use_deterministic_algorithms(True, warn_only=True)`` is on while training).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .atomic import atomic_write_text
from .cuda_graphs import GraphedTrainStep
from .data import AVSDataset, RobustSampler, build_loader
from .errors import ConfigError
from .layout import CONDITIONS, is_negative
from .metrics import FPRMeter, IoUMeter
from .models import build_model
from .optim import build_optimizer, epoch_lr, set_lr
from .resume import (
    Checkpoints,
    Preempted,
    ResumeState,
    input_fingerprint,
    preemption_handlers,
    preemption_requested,
    save_model,
    seed_everything,
)
from .runtime import determinism, resolve_device
from .step import flatten_batch, predict_logits, train_step
from .train_config import SELECT_BY, resolve_config

_NEEDS_NEGATIVES = "select_by val_robust needs negative audio in the validation set"


def _say(log: Callable[[str], Any] | logging.Logger | None) -> Callable[[str], Any]:
    if log is None:
        return logging.getLogger(__name__).info
    if isinstance(log, logging.Logger):
        return log.info
    return log


def prepare_model(c: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The configured model on ``device`` (channels-last and compiled when configured).

    ``compile`` uses ``nn.Module.compile`` (in place), so ``state_dict`` keys stay the
    model's own and checkpoints load into an uncompiled model.
    """
    model = build_model(c["model"]).to(device)
    if c["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if c.get("compile"):
        model.compile()
    return model


@torch.no_grad()
def validation_scores(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    negatives: tuple[str, ...],
    *,
    amp: bool = False,
    channels_last: bool = False,
    gate: bool = False,
) -> dict[str, float]:
    """Validation numbers over a loader of (video, condition) items, batches of any mix.

    ``val_miou``/``val_frames``: AVSBench mIoU over the annotated frames of positive items;
    ``val_fpr_<neg>``/``val_nonempty_<neg>``: FPR and non-empty-mask rate per negative type.
    """
    was_training = model.training
    model.eval()
    iou, fpr = IoUMeter(), {neg: FPRMeter() for neg in negatives}
    try:
        for batch in loader:
            x = flatten_batch(batch, device, channels_last)
            logits = predict_logits(model, x, device, amp=amp, gate=gate)
            t = batch["frames"].shape[1]
            conds = [c for c in batch["condition"] for _ in range(t)]
            pos = torch.tensor([c == "positive" for c in conds], device=logits.device)
            if pos.any():
                iou.update(logits[pos], x["masks"][pos], x["mask_valid"][pos])
            for neg, meter in fpr.items():
                sel = torch.tensor([c == neg for c in conds], device=logits.device)
                if sel.any():
                    meter.update(logits[sel])
    finally:
        model.train(was_training)
    row: dict[str, float] = {"val_miou": iou.compute(), "val_frames": iou.n_frames}
    for neg, meter in fpr.items():
        r = meter.compute()
        row[f"val_fpr_{neg}"] = r["fpr"]
        row[f"val_nonempty_{neg}"] = r["nonempty_rate"]
    return row


def selection_score(row: Mapping[str, Any], select_by: str) -> float:
    """The number an epoch is chosen by for ``best.pt`` (higher is better; NaN: never chosen).

    ``val_miou``: the validation mIoU of the positives. ``val_robust``: the mean of that
    mIoU and the share of empty predicted masks under the validation negatives (1 - the
    mean of the ``val_nonempty_<neg>`` rates of :func:`validation_scores`). The robust
    model's mIoU peaks at epochs whose match gate still opens on much off-screen sound,
    so choosing by mIoU alone throws away what the negatives taught it.
    """
    miou = float(row["val_miou"])
    if select_by == "val_miou":
        return miou
    if select_by == "val_robust":
        rates = [float(v) for k, v in row.items() if k.startswith("val_nonempty_")]
        if not rates:
            raise ConfigError(_NEEDS_NEGATIVES)
        return (miou + 1.0 - sum(rates) / len(rates)) / 2.0
    raise ConfigError(f"select_by {select_by!r}: use one of {', '.join(SELECT_BY)}")


def best_summary(history: Sequence[Mapping[str, Any]], best: Mapping[str, Any]) -> dict[str, Any]:
    """``best_epoch``, ``best_val_score`` and ``best_val_miou`` (the mIoU *at* that epoch).

    ``best`` is the resume state's ``{"epoch", "score"}``; the mIoU comes from the history
    so that checkpoints written before ``select_by`` existed resume unchanged.
    """
    epoch = int(best["epoch"])
    row = next((r for r in history if r.get("epoch") == epoch), {})
    return {
        "best_epoch": epoch,
        "best_val_score": float(best["score"]),
        "best_val_miou": float(row.get("val_miou", math.nan)),
    }


# ----------------------------------------------------------------------------- files
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def write_metrics(
    out_dir: Path, history: list[dict[str, Any]], best: dict[str, Any] | None, cfg: dict
) -> None:
    """Rewrite ``metrics.tsv`` and ``metrics.json`` (atomically) from the whole history.

    The json's ``best`` is :func:`best_summary` with the config's ``select_by`` (``null``
    before the first epoch).
    """
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    lines = ["\t".join(columns)]
    lines += ["\t".join(_fmt(row.get(k, "")) for k in columns) for row in history]
    atomic_write_text(out_dir / "metrics.tsv", "\n".join(lines) + "\n")
    doc = {
        "history": history,
        "best": None
        if best is None
        else {"select_by": cfg["select_by"], **best_summary(history, best)},
        "config": cfg,
        "definitions": {
            "val_miou": "AVSBench mIoU (empty GT: 1 - predicted fg fraction) over all "
            "annotated frames of the positive validation items",
            "val_fpr_<neg>": "mean predicted-foreground pixel fraction under that negative audio",
            "val_nonempty_<neg>": "share of frames with a non-empty predicted mask",
            "val_score": "what best.pt is chosen by (select_by): val_miou, or for val_robust "
            "the mean of val_miou and 1 - the mean of the val_nonempty_<neg>",
            "train_*": "means over the epoch's batches",
        },
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(_json_safe(doc), indent=2) + "\n")


def _improved(score: float, best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if math.isnan(score):
        return False
    return math.isnan(best["score"]) or score > best["score"]


# ----------------------------------------------------------------------------- training
def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    c: dict[str, Any],
    device: torch.device,
    epoch: int,
    conditions: tuple[str, ...],
    progress: bool,
    on_batch: Callable[[int, int, dict[str, Tensor]], Any] | None,
    last: Path,
    step: GraphedTrainStep | None = None,
) -> dict[str, Any]:
    model.train()
    channels_last = c["channels_last"] and device.type == "cuda"
    sums: dict[str, Tensor] = {}
    n_batches = 0
    counts: Counter[str] = Counter()
    desc = f"epoch {epoch + 1}/{c['epochs']}"
    with tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch") as bar:
        for i, batch in enumerate(bar):
            if preemption_requested():
                raise Preempted(epoch, last if last.exists() else None)
            x = flatten_batch(batch, device, channels_last)
            parts = step(x) if step is not None else train_step(model, opt, x, c, device)
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            n_batches += 1
            counts.update(batch["condition"])
            if on_batch is not None:
                on_batch(epoch, i, parts)
    means = {k: float(v) / max(n_batches, 1) for k, v in sums.items()}
    if n_batches and not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(f"epoch {epoch + 1}: non-finite training loss {means}")
    row: dict[str, Any] = {"epoch": epoch + 1, "train_items": sum(counts.values())}
    row.update({f"train_items_{cond}": counts.get(cond, 0) for cond in conditions})
    row["train_loss"] = means.get("total", math.nan)
    for k in ("bce", "iou", "av", "sounding"):
        row[f"train_{k}"] = means.get(k, math.nan)
    if "mix" in means:  # only the dice+mix loss has it (AVSegFormer)
        row["train_mix"] = means["mix"]
    return row


def train(
    cfg: Mapping[str, Any],
    train_ds: AVSDataset,
    val_ds: AVSDataset,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    device: str | torch.device = "auto",
    progress: bool = True,
    log: Callable[[str], Any] | logging.Logger | None = None,
    *,
    on_batch: Callable[[int, int, dict[str, Tensor]], Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) one model; see the module docstring for config, files and signals.

    ``on_batch(epoch, batch_index, parts)`` is called after every optimizer step (tests,
    custom monitoring). Returns a summary: ``epochs``, ``start_epoch`` (0 unless resumed),
    ``best_epoch``, ``best_val_score`` (:func:`selection_score` at that epoch),
    ``best_val_miou`` (the validation mIoU at that epoch), ``final_val_miou``, ``history``
    and the output paths.
    Raises :class:`~avsrobust.resume.Preempted` on SIGTERM/SIGUSR1. Config keys:
    :mod:`avsrobust.train_config`.
    """
    c = resolve_config(cfg)
    say = _say(log)
    dev = resolve_device(device)
    out_dir, ckpt_dir = Path(out_dir), Path(ckpt_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if c["cuda_graphs"] and dev.type != "cuda":
        say("cuda_graphs needs CUDA: training eagerly on the CPU")
    with determinism(c["deterministic"]), preemption_handlers(say):
        return _train(c, train_ds, val_ds, out_dir, ckpt_dir, dev, progress, say, on_batch)


def _set_model_epoch(model: nn.Module, epoch: int) -> bool:
    """Tell a model with epoch-dependent training (AVSegFormer's frozen-backbone epochs,
    ``set_epoch``) the epoch about to start; True when its frozen parts changed."""
    set_epoch = getattr(model, "set_epoch", None)
    if set_epoch is None:
        return False
    before = getattr(model, "backbone_frozen", None)
    set_epoch(epoch)
    return getattr(model, "backbone_frozen", None) != before


def _train(
    c: dict[str, Any],
    train_ds: AVSDataset,
    val_ds: AVSDataset,
    out_dir: Path,
    ckpt_dir: Path,
    dev: torch.device,
    progress: bool,
    say: Callable[[str], Any],
    on_batch: Callable[[int, int, dict[str, Tensor]], Any] | None,
) -> dict[str, Any]:
    seed_everything(c["seed"])
    model = prepare_model(c, dev)
    channels_last = c["channels_last"] and dev.type == "cuda"
    opt = build_optimizer(model, c, dev)

    sampler = RobustSampler(train_ds, c["negative_ratios"], seed=c["seed"])
    loader = build_loader(train_ds, sampler, c["batch_size"], c["workers"], dev, seed=c["seed"])
    # validation scores positives and the negative types (mixture is not a selection criterion)
    negatives = tuple(cond for cond in val_ds.conditions if is_negative(cond))
    if c["select_by"] == "val_robust" and not negatives:
        raise ConfigError(_NEEDS_NEGATIVES)  # before the first epoch, not after it
    val_items = [it for cond in ("positive", *negatives) for it in val_ds.items(cond)]
    val_loader = build_loader(val_ds, val_items, c["batch_size"], c["workers"], dev, c["seed"])
    conditions = tuple(cond for cond in CONDITIONS if cond in train_ds.conditions)

    ckpts = Checkpoints(ckpt_dir)
    inputs = input_fingerprint(train_ds, val_ds)
    state = ckpts.restore(model, opt, loader, c, inputs, dev, say)
    if state is None:
        state = ResumeState()
    else:
        say(f"resuming from {ckpts.last}: {state.epoch} epoch(s) done")
    start, history = state.epoch, state.history
    say(
        f"training {c['model'].get('name')} on {dev} for {c['epochs']} epochs: "
        f"{len(sampler)} items/epoch {sampler.counts()}, {len(val_items)} val items"
    )

    # created after any resume: the capture must see the restored optimizer state
    step = GraphedTrainStep(model, opt, c, dev) if c["cuda_graphs"] and dev.type == "cuda" else None
    for epoch in range(start, c["epochs"]):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        new_lr = set_lr(opt, epoch_lr(c, epoch))
        if (_set_model_epoch(model, epoch) or new_lr) and step is not None:
            # the step changed (e.g. the backbone unfroze, or the scheduled learning rate,
            # a constant of the graph): the captured graph is stale
            step = GraphedTrainStep(model, opt, c, dev)
        row = _train_epoch(
            model, opt, loader, c, dev, epoch, conditions, progress, on_batch, ckpts.last, step
        )
        row.update(
            validation_scores(
                model,
                val_loader,
                dev,
                negatives,
                amp=c["amp"],
                channels_last=channels_last,
                gate=c["gate_with_classifier"],
            )
        )
        row["val_score"] = score = selection_score(row, c["select_by"])
        row["lr"] = float(opt.param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        state.epoch = epoch + 1
        improved = _improved(score, state.best)
        if improved:
            state.best = {"epoch": epoch + 1, "score": score}
        write_metrics(out_dir, history, state.best, c)
        ckpts.save_epoch(model, opt, loader, state, c, inputs, improved)
        fprs = " ".join(f"fpr_{n}={row[f'val_fpr_{n}']:.4f}" for n in negatives)
        say(
            f"epoch {epoch + 1}/{c['epochs']}: loss {row['train_loss']:.4f} "
            f"val mIoU {row['val_miou']:.4f} score {score:.4f} {fprs} "
            f"({row['seconds']:.1f}s, {row['train_items']} items)"
        )
        if preemption_requested():
            raise Preempted(epoch + 1, ckpts.last)

    # Every output again, also after a resume (Snakemake deleted the failed job's).
    final_row = history[-1] if history else {}
    final_score = float(final_row.get("val_score", math.nan))
    save_model(out_dir / "final.pt", model, c, c["epochs"], final_score, metrics=final_row)
    write_metrics(out_dir, history, state.best, c)
    best = state.best
    if best is None:  # zero epochs: still leave the documented files
        best = {"epoch": 0, "score": math.nan}
        save_model(out_dir / "best.pt", model, c, 0, math.nan)
    ckpts.finish(out_dir / "best.pt")  # best.pt from the checkpoint folder; resume files go
    return {
        "epochs": c["epochs"],
        "start_epoch": start,
        **best_summary(history, best),
        "final_val_miou": float(final_row.get("val_miou", math.nan)),
        "history": history,
        "final": str(out_dir / "final.pt"),
        "best": str(out_dir / "best.pt"),
    }
