"""The training step captured once as a CUDA graph and replayed (``cuda_graphs: true``).

Eager PyTorch spends tens of microseconds of CPU per op launching ~2,000 kernels per tpavi
step; a graph replays them all in one launch (~3x tpavi training speed, README
"Training throughput"). The maths is :func:`avsrobust.step.train_step`'s, step for step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .step import train_step


def _release_rng_after_failed_capture(device: torch.device) -> None:
    """Give the device's default CUDA generator a fresh state object.

    A capture that fails in ``capture_end`` never runs the generator's capture epilogue,
    so its state still believes a capture is under way and every later random draw on
    the device fails ("Offset increment outside graph capture"). ``clone_state`` copies
    seed and offset into a new state that is not capturing.
    """
    gen = torch.cuda.default_generators[device.index or 0]
    gen.graphsafe_set_state(gen.clone_state())


class GraphedTrainStep:
    """:func:`train_step` captured once as a CUDA graph and replayed (``cuda_graphs: true``).

    Eager PyTorch spends tens of microseconds of CPU per op launching ~2,000 kernels per
    tpavi step; a graph replays them all in one launch. The first ``warmup`` steps run
    eagerly on a side stream (what capture needs: cuDNN/cuBLAS handles, lazily created
    optimizer state), then the whole step -- forward, loss, backward, optimizer update --
    is captured with the next batch's shapes and replayed for every batch of those
    shapes, the batch copied into static input buffers first. Batches of other shapes (an
    epoch's smaller last batch) take the eager path. Every step, eager or replayed, is a
    real training step with the same maths. The shapes captured are those of the first
    batch seen.

    Needs: CUDA, a capturable optimizer (:func:`~avsrobust.optim.build_optimizer` with
    ``cuda_graphs``), a constant learning rate (it is baked into the graph), no host sync
    inside the step. If capture fails anyway (``capture_error``), a warning is logged and
    every step runs eagerly: nothing of the failed capture was executed.
    """

    def __init__(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        c: Mapping[str, Any],
        device: torch.device,
        warmup: int = 3,
    ) -> None:
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.model, self.opt, self.c, self.device = model, opt, c, device
        self.warmup = warmup
        self.eager_steps = 0
        self.replays = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_error: str | None = None
        self._key: tuple | None = None
        self._static_x: dict[str, Tensor] = {}
        self._static_parts: dict[str, Tensor] = {}
        self._side = torch.cuda.Stream(device=device)

    @staticmethod
    def _shape_key(x: Mapping[str, Tensor]) -> tuple:
        return tuple((k, tuple(v.shape), v.dtype, v.stride()) for k, v in sorted(x.items()))

    def _eager(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        main = torch.cuda.current_stream(self.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            parts = train_step(self.model, self.opt, x, self.c, self.device)
        main.wait_stream(self._side)
        self.eager_steps += 1
        return parts

    def _capture(self, x: Mapping[str, Tensor]) -> bool:
        """Record the step as a graph; False (and eager from now on) when capture fails."""
        self._static_x = {k: v.detach().clone() for k, v in x.items()}
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        try:
            # thread_local: the DataLoader's pin-memory thread keeps calling CUDA (host
            # allocations, event queries) while we capture; that must not void the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._static_parts = train_step(
                    self.model, self.opt, self._static_x, self.c, self.device, autocast_cache=False
                )
        except RuntimeError as exc:  # nothing ran: the step is redone eagerly
            self.capture_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            logging.getLogger(__name__).warning(
                "CUDA graph capture failed, training eagerly: %s", self.capture_error
            )
            self._static_x, self._static_parts = {}, {}
            self.opt.zero_grad(set_to_none=True)
            _release_rng_after_failed_capture(self.device)
            return False
        self.graph = graph
        return True

    def __call__(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        key = self._shape_key(x)
        if self._key is None:
            self._key = key  # the first batch's shapes are the ones captured
        if key != self._key or self.capture_error is not None:
            return self._eager(x)
        if self.graph is None:
            if self.eager_steps < self.warmup:
                return self._eager(x)
            if not self._capture(x):  # records the step; the replay below performs it
                return self._eager(x)
        for k, v in x.items():
            self._static_x[k].copy_(v, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        self.replays += 1
        # copies: the next replay overwrites the static outputs
        return {k: v.clone() for k, v in self._static_parts.items()}
