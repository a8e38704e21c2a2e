"""The configuration of one training run: its defaults and the checks of a direct call.

The workflow builds a run's config from the validated ``training`` block and the
experiment (:func:`avsrobust.run_config.training_config`); config/schema.yaml is where
its values are defined and checked. :data:`TRAIN_DEFAULTS` repeats the schema's defaults
for direct callers of :func:`avsrobust.train.train` (tests, benchmarks, notebooks), and a
test checks that the two agree.

Keys (``cfg``; keys not listed pass through untouched, e.g. ``dataset``, ``negatives``):
``seed``, ``epochs``, ``batch_size`` (videos per batch; each video is 5 frames), ``lr``,
``lr_schedule`` (``constant`` | ``cosine``; :func:`~avsrobust.optim.epoch_lr`),
``optimizer`` (``adam`` | ``adamw``), ``weight_decay``, ``negative_ratios`` (``{silence: r,
noise: r, offscreen: r}``; empty = the baseline experiment, positives only), ``workers``
(DataLoader processes), ``model`` (for :func:`~avsrobust.models.build_model`), ``loss``
(``iou_weight``, ``av_weight``, ``classifier_weight``; :func:`~avsrobust.losses.total_loss`),
``select_by`` (which epoch is ``best.pt``: one of :data:`SELECT_BY`, scored by
:func:`~avsrobust.train.selection_score`), ``amp`` (bf16 autocast, CUDA only),
``channels_last`` (CUDA only), ``gate_with_classifier`` (validation masks of frames the
classifier calls silent are emptied; see :func:`~avsrobust.step.gate_logits`). Speed (none
changes the maths; see :func:`~avsrobust.runtime.determinism`,
:class:`~avsrobust.cuda_graphs.GraphedTrainStep`):
``deterministic`` (true: deterministic kernels, cuDNN autotuning off; false: fastest kernels,
cuDNN autotuning on), ``cuda_graphs`` (capture the whole training step as one CUDA graph and
replay it: removes the per-op CPU launch cost; CUDA only), ``compile`` (``torch.compile`` the
model; not together with ``cuda_graphs``).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .layout import GENERATED_TYPES
from .losses import LOSS_DEFAULTS, loss_weights
from .optim import LR_SCHEDULES

#: ``select_by`` values: ``val_miou`` (best validation mIoU of the positives) or
#: ``val_robust`` (best mean of that mIoU and the share of empty masks under the validation
#: negatives: the positives' best epoch is often one whose gate opens on off-screen sound).
SELECT_BY = ("val_miou", "val_robust")

#: config/schema.yaml's ``training`` defaults (plus ``seed`` and ``negative_ratios``, which
#: the workflow takes from ``training.seeds`` and the experiment); tests/test_config_files.py
#: checks they agree. The key order is that of every saved config.
TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "epochs": 12,
    "batch_size": 4,
    "lr": 0.002,
    "lr_schedule": "cosine",
    "optimizer": "adamw",
    "weight_decay": 0.0001,
    "negative_ratios": {},
    "select_by": "val_miou",
    "workers": 0,
    "model": {"name": "small"},
    "loss": dict(LOSS_DEFAULTS),
    "amp": True,
    "channels_last": True,
    "gate_with_classifier": False,
    "deterministic": True,
    "cuda_graphs": True,
    "compile": False,
}


def plain(obj: Any) -> Any:
    """JSON-plain copy (dicts, lists, str, numbers, bool, None): safe for weights_only loads."""
    return json.loads(json.dumps(obj, default=str))


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` over :data:`TRAIN_DEFAULTS`, checked; returns a JSON-plain dict.

    The workflow's configs were checked by the schema already; these checks are for the
    direct callers the schema never sees (the same rules, kept here because a library call
    does not go through Snakemake's validation), plus the one rule a schema cannot state
    (``cuda_graphs`` and ``compile`` exclude each other).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"training config must be a mapping, got {type(cfg).__name__}")
    c = plain({**copy.deepcopy(TRAIN_DEFAULTS), **dict(cfg)})
    if c["negative_ratios"] is None:
        c["negative_ratios"] = {}
    if c["loss"] is None:
        c["loss"] = {}

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"training.{key} must be {what}, got {c[key]!r}")

    def is_int(v: Any) -> bool:
        return type(v) is int

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    need("seed", is_int(c["seed"]), "an integer")
    need("epochs", is_int(c["epochs"]) and c["epochs"] >= 0, "an integer >= 0")
    need("batch_size", is_int(c["batch_size"]) and c["batch_size"] >= 1, "an integer >= 1")
    need("workers", is_int(c["workers"]) and c["workers"] >= 0, "an integer >= 0")
    need("lr", is_num(c["lr"]) and c["lr"] > 0, "a number > 0")
    need("weight_decay", is_num(c["weight_decay"]) and c["weight_decay"] >= 0, "a number >= 0")
    need("optimizer", c["optimizer"] in ("adam", "adamw"), "'adam' or 'adamw'")
    need("lr_schedule", c["lr_schedule"] in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}")
    need("select_by", c["select_by"] in SELECT_BY, f"one of {', '.join(SELECT_BY)}")
    for key in ("amp", "channels_last", "gate_with_classifier", "deterministic"):
        need(key, isinstance(c[key], bool), "true or false")
    for key in ("cuda_graphs", "compile"):
        need(key, isinstance(c[key], bool), "true or false")
    if c["cuda_graphs"] and c["compile"]:
        raise ConfigError("training.cuda_graphs and training.compile cannot both be true")
    need("negative_ratios", isinstance(c["negative_ratios"], dict), "a mapping type -> ratio")
    for neg, ratio in c["negative_ratios"].items():
        if neg not in GENERATED_TYPES:
            raise ConfigError(
                f"training.negative_ratios: unknown audio type {neg!r}; use {GENERATED_TYPES}"
            )
        if not (is_num(ratio) and 0 <= ratio <= 1):
            raise ConfigError(
                f"training.negative_ratios.{neg} must be a number >= 0 and <= 1, got {ratio!r}"
            )
    need("model", isinstance(c["model"], dict), "a mapping")
    loss_weights(c)  # raises on bad loss keys/values
    return c
