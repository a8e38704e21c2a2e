"""One step of an AVS model on a batch: what training, validation, evaluation and the
benchmarks share, and the only place they meet the model.

A loader batch holds ``[B, T, ...]`` videos; models see frames (:func:`flatten_batch`).
:func:`train_step` is forward, :func:`~avsrobust.losses.total_loss`, backward and the
optimizer step; :func:`predict_logits` is inference with optional gating by the model's
"is something sounding" head. Any model of :func:`avsrobust.models.build_model` plugs in
here: ``model(frames, audio)`` returns ``{"logits", "sounding" (optional), "av_pairs"}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .losses import total_loss

GATED_LOGIT = -1.0e4  # logit written over frames the classifier calls silent


def flatten_batch(
    batch: Mapping[str, Any], device: torch.device, channels_last: bool = False
) -> dict[str, Tensor]:
    """A loader batch ``[B, T, ...]`` -> frame-level tensors ``[B*T, ...]`` on ``device``.

    ``sounding`` (one value per video) is repeated over the video's T frames.
    """
    frames = batch["frames"]
    t = frames.shape[1]
    f = frames.flatten(0, 1).to(device, non_blocking=True)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    return {
        "frames": f,
        "audio": batch["audio"].flatten(0, 1).to(device, non_blocking=True),
        "masks": batch["masks"].flatten(0, 1).to(device, non_blocking=True),
        "mask_valid": batch["mask_valid"].flatten(0, 1).to(device, non_blocking=True),
        "sounding": batch["sounding"].repeat_interleave(t).to(device, non_blocking=True),
    }


def gate_logits(logits: Tensor, sounding: Tensor) -> Tensor:
    """Empty the masks of frames whose sounding logit is <= 0 (classifier says silent)."""
    keep = (sounding.reshape(-1) > 0).reshape(-1, *([1] * (logits.ndim - 1)))
    return torch.where(keep, logits, torch.full_like(logits, GATED_LOGIT))


def autocast(
    device: torch.device, amp: bool, cache: bool = True
) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp`` (``cache=False`` while a CUDA graph is captured)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Mapping[str, Tensor],
    c: Mapping[str, Any],
    device: torch.device,
    *,
    autocast_cache: bool = True,
) -> dict[str, Tensor]:
    """One optimizer step on a flattened batch: forward, :func:`total_loss`, backward, step.

    Returns the detached loss parts (device tensors: nothing is read back to the host).
    """
    with autocast(device, c["amp"], autocast_cache):
        out = model(x["frames"], x["audio"])
    loss, parts = total_loss(out, x, c)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return parts


def predict_logits(
    model: nn.Module, x: Mapping[str, Tensor], device: torch.device, *, amp: bool, gate: bool
) -> Tensor:
    """Float32 mask logits of a flattened batch; ``gate``: empty the frames the
    classifier head calls silent (models without the head are never gated)."""
    with autocast(device, amp):
        out = model(x["frames"], x["audio"])
    logits = out["logits"].float()
    if gate and out.get("sounding") is not None:
        logits = gate_logits(logits, out["sounding"].float())
    return logits
