"""The optimizer of a training run and its implementation flags (fused, capturable).

Building and resuming share one rule for the flags, so a run resumed on another device or
with ``cuda_graphs`` switched uses its own implementation with the saved state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def optimizer_flags(c: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Implementation of Adam(W): fused kernels on CUDA (capturable for CUDA graphs)."""
    if device.type != "cuda":
        return {"fused": None, "foreach": None, "capturable": False}
    return {"fused": True, "foreach": None, "capturable": bool(c.get("cuda_graphs"))}


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
