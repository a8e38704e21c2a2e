"""The training settings of one dataset, from the workflow config's ``training`` section.

Published recipes differ between S4 and MS3 (AVSBench TPAVI: 15 vs 30 epochs and the MS3
matching loss; AVSegFormer: 30 vs 60 epochs, 5 vs 10 frozen-backbone epochs), so
``training.by_dataset.{s4,ms3}`` holds per-dataset keys applied over the shared ones. A mapping
value (``model``, ``loss``) is merged key by key, so a recipe overrides one model key without
restating the model; any other value replaces the shared one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ``training`` keys that are workflow resources or per-run lists, not training science.
NOT_TRAINING_KEYS = ("gpus", "seeds", "by_dataset")


def training_settings(training: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """``training`` without :data:`NOT_TRAINING_KEYS`, with ``by_dataset[dataset]`` applied."""
    cfg = {k: v for k, v in training.items() if k not in NOT_TRAINING_KEYS}
    for key, value in (training.get("by_dataset") or {}).get(dataset, {}).items():
        if isinstance(value, Mapping) and isinstance(cfg.get(key), Mapping):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg
