"""What lets a training run stop and come back to *the same* weights: preemption signals,
RNG states, the checkpoint files and the check that a checkpoint belongs to the run.

Preemption. SIGTERM (what SLURM sends before killing a job, and what the workflow
forwards to its running jobs when Snakemake itself gets one: avsrobust.shutdown) and
SIGUSR1 (``--signal``) only set a flag (:func:`request_preemption` does the same). The
loop checks it before each training batch and after each epoch's checkpoint; when set it
raises :class:`Preempted` (``exit_code`` 143) without training further. Work of the
unfinished epoch is discarded: ``last.pt`` always holds the last *completed* epoch
(written atomically at its end), which is what exact resume needs -- a mid-epoch state
would also need the loader's position. A preemption during the first epoch leaves no
``last.pt``; the rerun starts afresh.

The checkpoint folder (:class:`Checkpoints`) holds what a failed or preempted job must not
lose, because Snakemake deletes a failed job's outputs: ``last.pt`` (model, optimizer,
every RNG, history, best epoch) and ``best.pt``, the best weights so far (committed in two
steps: ``best.next.pt``, then ``last.pt`` naming its epoch, then the rename, so a kill
between any two leaves a consistent pair). A resumed run writes every output again:
``best.pt`` from the folder's copy, ``final.pt``, ``metrics.tsv``/``.json``. A *finished*
run deletes the folder's files: they would only be resumed by a rerun of a finished run,
which is a forced or changed one (``--forcerun``, new config, new inputs) and must start
afresh.

Resume or start afresh. :meth:`Checkpoints.restore` loads ``last.pt`` into the model, the
optimizer and every RNG (torch, CUDA, numpy, python ``random``, the loader's generator)
when it belongs to this run: same checkpoint version, same config except the keys that
do not change what is computed (:data:`RESUME_FREE_KEYS`; ``epochs`` may grow, unless a
learning-rate schedule depends on it), the same
input files (:func:`input_fingerprint`: size and modification time of every file the
datasets read, so rebuilt features or a fixed frame cache start afresh), and best weights
that match it. Otherwise it says why, removes the stale files and the run starts afresh.

Files (all plain tensors/containers: ``torch.load(path, weights_only=True)`` loads them):
``best.pt`` / ``final.pt`` (:func:`save_model`: ``model``, ``cfg``, ``epoch``, ``score``,
plus ``metrics`` in ``final.pt``) and ``last.pt`` (:meth:`Checkpoints.save_epoch`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
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
from .optim import load_optimizer_state

#: Config keys that may differ between a checkpoint and the run resuming it: none changes
#: what an epoch computes (``epochs`` only how many; a checkpoint past it is not resumed).
RESUME_FREE_KEYS = ("epochs", "workers", "cuda_graphs", "compile", "deterministic")
PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what a killed job reports
CHECKPOINT_VERSION = 2  # 2: best weights beside last.pt, input fingerprint
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
BEST_PENDING_FILE = "best.next.pt"


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
    """``best.pt`` / ``final.pt``: CPU weights, the run's config, epoch and the epoch's
    selection score (``val_score``: the val mIoU unless ``select_by`` says otherwise)."""
    save_torch(path, {"model": cpu_state(model), "cfg": c, "epoch": epoch, "score": score, **extra})


def input_fingerprint(*datasets: Any) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every file the datasets read (``AVSDataset.files``).

    Snakemake reruns training when an input changed; a checkpoint trained on the old
    files must then not be resumed. Sizes and modification times, not contents: free to
    take on a multi-GB frame cache, and a rebuilt file always has a new time.
    """
    out = []
    for ds in datasets:
        for path in ds.files:
            st = os.stat(path)
            out.append([str(path), int(st.st_size), int(st.st_mtime_ns)])
    return out


@dataclass
class ResumeState:
    """Where a run stands after its completed epochs (what ``last.pt`` brings back)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "score"} of the best val_score so far


def why_not_resume(
    ck: Mapping[str, Any], c: Mapping[str, Any], inputs: list[list[Any]]
) -> str | None:
    """Why a loaded ``last.pt`` does not belong to this run (``None``: it does)."""
    if ck.get("version") != CHECKPOINT_VERSION:
        return f"checkpoint version {ck.get('version')!r}, this code writes {CHECKPOINT_VERSION}"
    old = ck["cfg"]
    keys = [k for k in dict.fromkeys([*old, *c]) if k not in RESUME_FREE_KEYS]
    diff = [k for k in keys if old.get(k) != c.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {c.get(k)!r}" for k in diff)
        return f"written with a different config ({detail})"
    if int(ck["epoch"]) > c["epochs"]:
        return f"holds {ck['epoch']} epochs, more than the {c['epochs']} configured"
    if c["lr_schedule"] != "constant" and old.get("epochs") != c["epochs"]:
        # the rates of the epochs done depend on the run's length (optim.epoch_lr)
        return f"lr_schedule {c['lr_schedule']} over {old.get('epochs')} epochs, now {c['epochs']}"
    if ck.get("inputs") != inputs:
        before = {path: rest for path, *rest in ck.get("inputs") or []}
        now = {path: rest for path, *rest in inputs}
        changed = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
        return f"trained on other input files ({', '.join(changed[:3]) or 'their order'} changed)"
    return None


class Checkpoints:
    """The resume files of one run (``ckpt_dir``): ``last.pt``, ``best.pt``, ``best.next.pt``.

    ``save_epoch`` after every completed epoch, ``restore`` when a run starts and
    ``finish`` when it has written its outputs (see the module docstring).
    """

    def __init__(self, ckpt_dir: str | Path):
        self.dir = Path(ckpt_dir)
        self.last = self.dir / LAST_FILE
        self.best = self.dir / BEST_FILE
        self.pending = self.dir / BEST_PENDING_FILE

    def clear(self) -> None:
        """Remove every resume file (and the folder, once empty)."""
        for path in (self.last, self.best, self.pending):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def save_epoch(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        loader: torch.utils.data.DataLoader,
        state: ResumeState,
        c: Mapping[str, Any],
        inputs: list[list[Any]],
        improved: bool,
    ) -> None:
        """``last.pt`` after ``state.epoch`` completed epochs (and ``best.pt`` if ``improved``)."""
        if improved:
            assert state.best is not None and state.best["epoch"] == state.epoch
            save_model(self.pending, model, c, state.epoch, state.best["score"])
        save_torch(
            self.last,
            {
                "version": CHECKPOINT_VERSION,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": state.epoch,
                "rng": rng_state(loader, state.epoch),
                "best": state.best,
                "history": state.history,
                "cfg": c,
                "inputs": inputs,
            },
        )
        if improved:
            os.replace(self.pending, self.best)

    def restore(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        loader: torch.utils.data.DataLoader,
        c: Mapping[str, Any],
        inputs: list[list[Any]],
        dev: torch.device,
        say: Callable[[str], Any],
    ) -> ResumeState | None:
        """Load ``last.pt`` into the model, optimizer and RNGs if it belongs to this run.

        ``None``: start afresh (no checkpoint, or one of another run: ``say`` tells why,
        and its files are removed).
        """
        if not self.last.exists():
            self.clear()  # a pending best of a first epoch that never completed
            return None
        ck = torch.load(self.last, map_location=dev, weights_only=True)
        reason = why_not_resume(ck, c, inputs) or self._settle_best(ck["best"])
        if reason is not None:
            say(f"{self.last}: {reason}; starting afresh")
            self.clear()
            return None
        model.load_state_dict(ck["model"])
        load_optimizer_state(opt, ck["optimizer"], c, dev)
        set_rng_state(ck["rng"], loader)
        return ResumeState(int(ck["epoch"]), list(ck["history"]), ck["best"])

    def _settle_best(self, best: Mapping[str, Any] | None) -> str | None:
        """Finish or undo a half-committed ``best.pt``; why it does not match ``last.pt``."""
        want = None if best is None else int(best["epoch"])
        if self.pending.exists():
            if _epoch_of(self.pending) == want:
                os.replace(self.pending, self.best)  # killed just before the rename
            else:
                self.pending.unlink()  # killed before last.pt named it
        if want is None:
            return None
        have = _epoch_of(self.best) if self.best.exists() else None
        if have != want:
            return f"its best weights (epoch {want}) are not in {self.best}"
        return None

    def finish(self, out_best: Path) -> None:
        """Write the run's ``best.pt`` from the folder's copy, then remove the resume files."""
        if self.best.exists():
            with atomic_path(out_best) as tmp:
                shutil.copyfile(self.best, tmp)
        self.clear()


def _epoch_of(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except (OSError, RuntimeError, KeyError, ValueError):
        return None
