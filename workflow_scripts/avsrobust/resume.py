"""What lets a training run stop and come back to *the same* weights: preemption signals,
RNG states, the checkpoint files and the check that a checkpoint fits the run.

Preemption. SIGTERM (what SLURM sends before killing a job) and SIGUSR1 (``--signal``)
only set a flag (:func:`request_preemption` does the same). The loop checks it before each
training batch and after each epoch's checkpoint; when set it raises :class:`Preempted`
(``exit_code`` 143) without training further. Work of the unfinished epoch is discarded:
``last.pt`` always holds the last *completed* epoch (written atomically at its end), which
is what exact resume needs -- a mid-epoch state would also need the loader's position.
A preemption during the first epoch leaves no ``last.pt``; the rerun starts afresh.

Resume. :func:`restore` loads ``last.pt`` into the model, the optimizer, every RNG (torch,
CUDA, numpy, python ``random``, the loader's generator) and returns the epoch count, best
score and metrics history; a checkpoint written with a different seed/model/optimizer/loss/
sampling config (:data:`RESUME_KEYS`) or on another training set is refused
(:class:`~avsrobust.errors.ConfigError`); ``epochs`` and ``workers`` may change.

Files (all plain tensors/containers: ``torch.load(path, weights_only=True)`` loads them):
``best.pt`` / ``final.pt`` (:func:`save_model`: ``model``, ``cfg``, ``epoch``, ``score``,
plus ``metrics`` in ``final.pt``) and ``last.pt`` (:func:`save_last`).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .atomic import atomic_path
from .errors import ConfigError
from .optim import load_optimizer_state

#: Config keys a checkpoint must agree on to be resumed (``epochs``/``workers`` may change).
RESUME_KEYS = (
    "seed",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "negative_ratios",
    "model",
    "loss",
    "amp",
    "channels_last",
)
PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what a killed job reports
CHECKPOINT_VERSION = 1
LAST_FILE = "last.pt"


class Preempted(RuntimeError):
    """Training stopped on SIGTERM/SIGUSR1; ``last.pt`` holds ``epoch`` completed epochs."""

    exit_code = PREEMPT_EXIT_CODE

    def __init__(self, epoch: int, checkpoint: Path | None):
        self.epoch = epoch
        self.checkpoint = checkpoint
        where = (
            f"{checkpoint} holds epoch {epoch}"
            if checkpoint is not None
            else "no epoch completed, nothing to resume"
        )
        super().__init__(f"preempted after {epoch} completed epoch(s); {where}")


# ----------------------------------------------------------------------------- preemption flag
_PREEMPT = threading.Event()


def request_preemption(signum: int | None = None, frame: Any = None) -> None:
    """Ask the running :func:`~avsrobust.train.train` to stop at the next batch boundary."""
    del signum, frame
    _PREEMPT.set()


def preemption_requested() -> bool:
    return _PREEMPT.is_set()


@contextlib.contextmanager
def preemption_handlers(say: Callable[[str], Any]) -> Iterator[None]:
    """Route SIGTERM/SIGUSR1 to :func:`request_preemption` while training (main thread only)."""
    _PREEMPT.clear()
    if threading.current_thread() is not threading.main_thread():
        say("not in the main thread: SIGTERM/SIGUSR1 handlers not installed")
        yield
        return
    old: dict[int, Any] = {}
    for name in ("SIGTERM", "SIGUSR1"):
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, request_preemption)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- RNG state
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(loader: torch.utils.data.DataLoader, sampler_epoch: int) -> dict[str, Any]:
    """Every RNG state as tensors / ints / lists (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": [int(x) for x in py_state],
            "gauss": py_gauss,
        },
        "loader": loader.generator.get_state() if loader.generator is not None else None,
        "sampler_epoch": int(sampler_epoch),
    }


def set_rng_state(state: Mapping[str, Any], loader: torch.utils.data.DataLoader) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].cpu().numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state["loader"] is not None and loader.generator is not None:
        loader.generator.set_state(state["loader"].cpu())


# ----------------------------------------------------------------------------- files
def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` through a temporary name: a killed job never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_model(
    path: Path, model: nn.Module, c: Mapping[str, Any], epoch: int, score: float, **extra: Any
) -> None:
    """``best.pt`` / ``final.pt``: CPU weights, the run's config, epoch and val mIoU."""
    save_torch(path, {"model": cpu_state(model), "cfg": c, "epoch": epoch, "score": score, **extra})


@dataclass
class ResumeState:
    """Where a run stands after its completed epochs (what ``last.pt`` brings back)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "score"} of the best val mIoU so far


def save_last(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    state: ResumeState,
    c: Mapping[str, Any],
    n_train: int,
) -> None:
    """``last.pt`` after ``state.epoch`` completed epochs: everything :func:`restore` needs."""
    save_torch(
        path,
        {
            "version": CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": state.epoch,
            "rng": rng_state(loader, state.epoch),
            "best": state.best,
            "history": state.history,
            "cfg": c,
            "train_videos": n_train,
        },
    )


def check_resume(ck: Mapping[str, Any], c: Mapping[str, Any], n_train: int, path: Path) -> None:
    """Refuse a checkpoint of another version, config (:data:`RESUME_KEYS`) or training set."""
    if ck.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path}: checkpoint version {ck.get('version')!r} is not supported")
    old = ck["cfg"]
    diff = [k for k in RESUME_KEYS if old.get(k) != c.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {c.get(k)!r}" for k in diff)
        raise ConfigError(
            f"{path} was written with a different config ({detail}); "
            "delete the checkpoint folder to start afresh"
        )
    if ck.get("train_videos") != n_train:
        raise ConfigError(
            f"{path} was trained on {ck.get('train_videos')} videos, the dataset has {n_train}"
        )


def restore(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    c: Mapping[str, Any],
    n_train: int,
    dev: torch.device,
) -> ResumeState | None:
    """Load ``last.pt`` (if any) into the model, optimizer and RNGs; ``None``: start afresh."""
    if not path.exists():
        return None
    ck = torch.load(path, map_location=dev, weights_only=True)
    check_resume(ck, c, n_train, path)
    model.load_state_dict(ck["model"])
    load_optimizer_state(opt, ck["optimizer"], c, dev)
    set_rng_state(ck["rng"], loader)
    return ResumeState(int(ck["epoch"]), list(ck["history"]), ck["best"])
