"""The optimizer of a training run, its implementation flags (fused, capturable) and its
learning-rate schedule.

Building and resuming share one rule for the flags, so a run resumed on another device or
with ``cuda_graphs`` switched uses its own implementation with the saved state.

The schedule (``lr_schedule``) is a function of the epoch alone (:func:`epoch_lr`), set at
the start of every epoch: a resumed run gets the rate an uninterrupted one had, with no
scheduler state to save. ``cosine`` decays from ``lr`` to :data:`COSINE_FLOOR` x ``lr`` over
the run. Why the small model's default uses it (README "Results on the embedded default"):
at a constant rate its validation mIoU and off-screen scores jump from epoch to epoch (S4
off-screen non-empty frames 30-77% over the last epochs of one run), and the per-location
audio-visual match under-fits its own training clips; the decay lets the last epochs settle
(3 seeds, S4: off-screen FPR 0.050 -> 0.041, test AUC of the sounding gate positive vs
off-screen 0.80 -> 0.85).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def optimizer_flags(c: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Implementation of Adam(W): fused kernels on CUDA (capturable for CUDA graphs)."""
    if device.type != "cuda":
        return {"fused": None, "foreach": None, "capturable": False}
    return {"fused": True, "foreach": None, "capturable": bool(c.get("cuda_graphs"))}


#: ``training.lr_schedule`` values (config/schema.yaml).
LR_SCHEDULES = ("constant", "cosine")
#: The last epochs of a ``cosine`` schedule train at this fraction of ``lr``, not at zero.
COSINE_FLOOR = 0.05


def epoch_lr(c: Mapping[str, Any], epoch: int) -> float:
    """Learning rate of (0-based) ``epoch``: ``lr``, or its cosine decay to the floor.

    ``cosine``: ``lr * (f + (1 - f) * (1 + cos(pi * epoch / epochs)) / 2)``, f =
    :data:`COSINE_FLOOR`: ``lr`` in the first epoch, just above ``f * lr`` in the last.
    """
    lr = float(c["lr"])
    schedule = c["lr_schedule"]
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    decay = 0.5 * (1.0 + math.cos(math.pi * epoch / max(int(c["epochs"]), 1)))
    return lr * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> bool:
    """Set every parameter group's learning rate; True when it changed (a captured CUDA
    graph holds the old rate as a constant and must be captured again)."""
    changed = False
    for group in opt.param_groups:
        if group["lr"] != lr:
            group["lr"] = lr
            changed = True
    return changed


def build_optimizer(
    model: nn.Module, c: Mapping[str, Any], device: torch.device
) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters, as configured.

    On CUDA the fused implementation (one kernel for all parameters; the same update
    rule as the default multi-tensor one, up to rounding).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if c["optimizer"] == "adam" else torch.optim.AdamW
    return opt_cls(params, lr=c["lr"], weight_decay=c["weight_decay"], **optimizer_flags(c, device))


def load_optimizer_state(
    opt: torch.optim.Optimizer, state: Mapping[str, Any], c: Mapping[str, Any], dev: torch.device
) -> None:
    """``opt.load_state_dict`` keeping this run's implementation flags.

    A state dict carries the flags of the run that saved it (fused, capturable, ...);
    a run resumed on another device or with ``cuda_graphs`` changed uses its own, with
    each ``step`` counter where that implementation keeps it.
    """
    opt.load_state_dict(state)
    flags = optimizer_flags(c, dev)
    on_device = bool(flags["fused"] or flags["capturable"])
    for group in opt.param_groups:
        group.update(flags)
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "step" in st:
                where = p.device if on_device else torch.device("cpu")
                st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(where)
