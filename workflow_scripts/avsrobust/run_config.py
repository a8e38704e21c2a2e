"""The effective training config of one run (dataset, experiment, seed) in the workflow.

One documented order, later wins (README "Training"):

    schema defaults < training < training.per_dataset[dataset]
                    < experiments[experiment] < experiments[experiment].per_dataset[dataset]

Mappings merge key by key (``loss: {av_weight: 0.5}`` keeps the other loss weights; a
``model`` override keeps the rest of the model's settings unless it names another model,
which then starts from its own defaults). An override's ``epochs: null`` keeps the epochs
of the layers below: Snakemake merges a ``--configfile`` over config/config.yaml key by
key, so a file can only *undo* config.yaml's robust ``epochs`` by stating something, and
the published recipes differ per dataset (config/avsbench.yaml). The config must have
been validated by config/schema.yaml (which fills the defaults and rejects unknown keys);
this module only combines. Torch-free: it runs in Snakemake's process when the DAG is built.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: ``training`` keys that shape the DAG or the job, not the science of one run.
WORKFLOW_KEYS = ("seeds", "gpus", "per_dataset")


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mappings merged key by key (inputs are not modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = out.get(key)
        other_model = (
            key == "model"
            and isinstance(old, Mapping)
            and isinstance(value, Mapping)
            and value.get("name", old.get("name")) != old.get("name")
        )
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not other_model:
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def training_config(
    config: Mapping[str, Any],
    dataset: str,
    experiment: str,
    seed: int,
    warn: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """The science of one training run, as :func:`avsrobust.train.train` takes it.

    Negative types left out of ``negatives`` are not generated: their ratios drop out
    (``warn`` is told) so the default experiments work with any subset of negatives.
    """
    training = config["training"]
    cfg = {k: v for k, v in training.items() if k not in WORKFLOW_KEYS}
    exp = dict(config["experiments"][experiment])
    layers: Sequence[Mapping[str, Any]] = (
        training.get("per_dataset", {}).get(dataset, {}),
        {k: v for k, v in exp.items() if k != "per_dataset"},
        exp.get("per_dataset", {}).get(dataset, {}),
    )
    for layer in layers:
        cfg = merge(cfg, {k: v for k, v in layer.items() if not (k == "epochs" and v is None)})
    negatives = list(config["negatives"])
    ratios = dict(cfg.get("negative_ratios", {}))
    dropped = sorted(set(ratios) - set(negatives))
    if dropped and warn is not None:
        warn(
            f"experiments.{experiment}: no {dropped} audio is configured (negatives: "
            f"{negatives}); training {dataset}/{experiment} without those ratios"
        )
    cfg["negative_ratios"] = {k: v for k, v in ratios.items() if k in negatives}
    cfg["seed"] = int(seed)
    cfg["negatives"] = negatives
    cfg["dataset"] = dataset
    return cfg
