"""Train one audio-visual segmentation model: robust sampling, checkpoints, exact resume.

Why it looks like this (domain.md section 6): the robust recipe mixes negative audio with
empty targets into every epoch (:class:`~avsrobust.data.RobustSampler`, re-drawn per epoch,
any batch size), and cluster jobs get preempted, so a run must resume to *the same* weights
it would have reached uninterrupted.

Configuration (``cfg``; keys not listed are ignored, e.g. ``dataset``, ``gpus``; defaults in
:data:`TRAIN_DEFAULTS`, matching config/schema.yaml): ``seed``, ``epochs``, ``batch_size``
(videos per batch; each video is 5 frames), ``lr``, ``optimizer`` (``adam`` | ``adamw``),
``weight_decay``, ``negative_ratios`` (``{silence: r, noise: r, offscreen: r}``; empty = the
baseline experiment, positives only), ``workers`` (DataLoader processes), ``model`` (for
:func:`~avsrobust.models.build_model`), ``loss`` (``iou_weight``, ``av_weight``,
``classifier_weight``; :func:`~avsrobust.losses.total_loss`), ``amp`` (bf16 autocast, CUDA
only), ``channels_last`` (CUDA only), ``gate_with_classifier`` (validation masks of frames
the classifier calls silent are emptied; see :func:`gate_logits`). Speed (none changes the
maths; see :func:`determinism`, :class:`GraphedTrainStep`): ``deterministic`` (default true:
deterministic kernels, cuDNN autotuning off; false: fastest kernels, cuDNN autotuning on),
``cuda_graphs`` (capture the whole training step as one CUDA graph and replay it: removes
the per-op CPU launch cost; CUDA only), ``compile`` (``torch.compile`` the model; not
together with ``cuda_graphs``).

Outputs. ``out_dir/metrics.tsv`` (one row per completed epoch, rewritten atomically) and
``out_dir/metrics.json`` (same rows, ``null`` for NaN, plus best epoch and config); columns:
``epoch`` (1-based count of completed epochs), ``train_items`` and ``train_items_<cond>``
(items actually trained on), ``train_loss`` / ``train_bce`` / ``train_iou`` / ``train_av`` /
``train_sounding`` (means over batches), ``val_miou`` (AVSBench mIoU over every annotated
frame of the positive validation items), ``val_frames``, ``val_fpr_<neg>`` (mean predicted
foreground fraction under that negative audio) and ``val_nonempty_<neg>`` for each negative
condition of ``val_ds``, ``lr``, ``seconds``. ``out_dir/best.pt`` (best ``val_miou``;
``model``, ``cfg``, ``epoch``, ``score``), ``out_dir/final.pt`` (``model``, ``cfg``,
``epoch``, ``score``, ``metrics``), ``ckpt_dir/last.pt`` (everything needed to resume).
All are plain tensors/containers: ``torch.load(path, weights_only=True)`` loads them.

Resume. If ``ckpt_dir/last.pt`` exists, the model, optimizer, RNG states (torch, CUDA,
numpy, python ``random``, the loader's generator, the sampler epoch), best score and
metrics history are restored and training continues with the next epoch; a checkpoint
written with a different seed/model/optimizer/loss/sampling config is refused
(:class:`~avsrobust.errors.ConfigError`); ``epochs`` and ``workers`` may change. On the
CPU the final weights equal (``torch.equal``) those of an uninterrupted run; on CUDA they do
as far as the kernels are deterministic (with ``deterministic: true``,
``torch.use_deterministic_algorithms(True, warn_only=True)`` is on while training).

Preemption. SIGTERM (what SLURM sends before killing a job) and SIGUSR1 (``--signal``)
only set a flag (:func:`request_preemption` does the same). The loop checks it before each
training batch and after each epoch's checkpoint; when set it raises :class:`Preempted`
(``exit_code`` 143) without training further. Work of the unfinished epoch is discarded:
``last.pt`` always holds the last *completed* epoch (written atomically at its end), which
is what exact resume needs -- a mid-epoch state would also need the loader's position.
A preemption during the first epoch leaves no ``last.pt``; the rerun starts afresh.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .atomic import atomic_path, atomic_write_text
from .data import CONDITIONS, AVSDataset, RobustSampler, build_loader
from .errors import ConfigError
from .losses import loss_weights, total_loss
from .metrics import FPRMeter, IoUMeter
from .models import build_model

TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "epochs": 6,
    "batch_size": 4,
    "lr": 0.002,
    "optimizer": "adamw",
    "weight_decay": 0.0001,
    "negative_ratios": {},
    "workers": 0,
    "model": {"name": "small", "classifier": True},
    "loss": {},
    "amp": True,
    "channels_last": True,
    "gate_with_classifier": False,
    "deterministic": True,
    "cuda_graphs": False,
    "compile": False,
}
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
GATED_LOGIT = -1.0e4  # logit written over frames the classifier calls silent
CHECKPOINT_VERSION = 1


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
    """Ask the running :func:`train` to stop at the next batch boundary (signal handler)."""
    del signum, frame
    _PREEMPT.set()


def preemption_requested() -> bool:
    return _PREEMPT.is_set()


@contextlib.contextmanager
def _preemption_handlers(say: Callable[[str], Any]) -> Iterator[None]:
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


# ----------------------------------------------------------------------------- config
def _plain(obj: Any) -> Any:
    """JSON-plain copy (dicts, lists, str, numbers, bool, None): safe for weights_only loads."""
    return json.loads(json.dumps(obj, default=str))


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` over :data:`TRAIN_DEFAULTS`, checked; returns a JSON-plain dict."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"training config must be a mapping, got {type(cfg).__name__}")
    c = _plain({**copy.deepcopy(TRAIN_DEFAULTS), **dict(cfg)})
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
    for key in ("amp", "channels_last", "gate_with_classifier", "deterministic"):
        need(key, isinstance(c[key], bool), "true or false")
    for key in ("cuda_graphs", "compile"):
        need(key, isinstance(c[key], bool), "true or false")
    if c["cuda_graphs"] and c["compile"]:
        raise ConfigError("training.cuda_graphs and training.compile cannot both be true")
    need("negative_ratios", isinstance(c["negative_ratios"], dict), "a mapping type -> ratio")
    need("model", isinstance(c["model"], dict), "a mapping")
    loss_weights(c)  # raises on bad loss keys/values
    return c


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _say(log: Callable[[str], Any] | logging.Logger | None) -> Callable[[str], Any]:
    if log is None:
        return logging.getLogger(__name__).info
    if isinstance(log, logging.Logger):
        return log.info
    return log


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- RNG state
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


# ----------------------------------------------------------------------------- speed settings
@contextlib.contextmanager
def determinism(deterministic: bool) -> Iterator[None]:
    """Kernel selection while training; the previous global settings come back afterwards.

    ``True``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` and no cuDNN
    autotuning (same seed, same CUDA weights as far as kernels allow; CPU training is
    deterministic either way). ``False``: any algorithm, cuDNN autotuning on (faster convs
    for fixed shapes). Either way ``torch.utils.deterministic.fill_uninitialized_memory`` is
    off: deterministic mode would otherwise write NaN into every new tensor, one extra
    memory pass per allocation, a debugging aid our code does not need (it never reads
    memory it has not written).
    """
    fill = torch.utils.deterministic
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        fill.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    fill.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        fill.fill_uninitialized_memory = prev[3]


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


def _optimizer_flags(c: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
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
    return opt_cls(
        params, lr=c["lr"], weight_decay=c["weight_decay"], **_optimizer_flags(c, device)
    )


def load_optimizer_state(
    opt: torch.optim.Optimizer, state: Mapping[str, Any], c: Mapping[str, Any], dev: torch.device
) -> None:
    """``opt.load_state_dict`` keeping this run's implementation flags.

    A state dict carries the flags of the run that saved it (fused, capturable, ...);
    a run resumed on another device or with ``cuda_graphs`` changed uses its own, with
    each ``step`` counter where that implementation keeps it.
    """
    opt.load_state_dict(state)
    flags = _optimizer_flags(c, dev)
    on_device = bool(flags["fused"] or flags["capturable"])
    for group in opt.param_groups:
        group.update(flags)
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "step" in st:
                where = p.device if on_device else torch.device("cpu")
                st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(where)


# ----------------------------------------------------------------------------- batches
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


def _autocast(
    device: torch.device, amp: bool, cache: bool = True
) -> contextlib.AbstractContextManager:
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
    with _autocast(device, c["amp"], autocast_cache):
        out = model(x["frames"], x["audio"])
    loss, parts = total_loss(out, x, c)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return parts


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

    Needs: CUDA, a capturable optimizer (:func:`build_optimizer` with ``cuda_graphs``), a
    constant learning rate (it is baked into the graph), no host sync inside the step. If
    capture fails anyway (``capture_error``), a warning is logged and every step runs
    eagerly: nothing of the failed capture was executed.
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


def predict_logits(
    model: nn.Module, x: Mapping[str, Tensor], device: torch.device, *, amp: bool, gate: bool
) -> Tensor:
    """Float32 mask logits of a flattened batch; ``gate``: empty the frames the
    classifier head calls silent (models without the head are never gated)."""
    with _autocast(device, amp):
        out = model(x["frames"], x["audio"])
    logits = out["logits"].float()
    if gate and out.get("sounding") is not None:
        logits = gate_logits(logits, out["sounding"].float())
    return logits


@torch.no_grad()
def evaluate(
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


# ----------------------------------------------------------------------------- files
def _save(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
    """Rewrite ``metrics.tsv`` and ``metrics.json`` (atomically) from the whole history."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    lines = ["\t".join(columns)]
    lines += ["\t".join(_fmt(row.get(k, "")) for k in columns) for row in history]
    atomic_write_text(out_dir / "metrics.tsv", "\n".join(lines) + "\n")
    doc = {
        "history": history,
        "best": best,
        "config": cfg,
        "definitions": {
            "val_miou": "AVSBench mIoU (empty GT: 1 - predicted fg fraction) over all "
            "annotated frames of the positive validation items",
            "val_fpr_<neg>": "mean predicted-foreground pixel fraction under that negative audio",
            "val_nonempty_<neg>": "share of frames with a non-empty predicted mask",
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
            if _PREEMPT.is_set():
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
    return row


def _check_resume(ck: Mapping[str, Any], c: dict[str, Any], n_train: int, path: Path) -> None:
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
    ``best_epoch``, ``best_val_miou``, ``final_val_miou``, ``history`` and the output paths.
    Raises :class:`Preempted` on SIGTERM/SIGUSR1.
    """
    c = resolve_config(cfg)
    say = _say(log)
    dev = _device(device)
    out_dir, ckpt_dir = Path(out_dir), Path(ckpt_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if c["cuda_graphs"] and dev.type != "cuda":
        say("cuda_graphs needs CUDA: training eagerly on the CPU")
    with determinism(c["deterministic"]), _preemption_handlers(say):
        return _train(c, train_ds, val_ds, out_dir, ckpt_dir, dev, progress, say, on_batch)


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
    negatives = tuple(cond for cond in val_ds.conditions if cond != "positive")
    val_items = [it for cond in ("positive", *negatives) for it in val_ds.items(cond)]
    val_loader = build_loader(val_ds, val_items, c["batch_size"], c["workers"], dev, c["seed"])
    conditions = tuple(cond for cond in CONDITIONS if cond in train_ds.conditions)

    last = ckpt_dir / "last.pt"
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = 0
    if last.exists():
        ck = torch.load(last, map_location=dev, weights_only=True)
        _check_resume(ck, c, len(train_ds), last)
        model.load_state_dict(ck["model"])
        load_optimizer_state(opt, ck["optimizer"], c, dev)
        set_rng_state(ck["rng"], loader)
        start, history, best = int(ck["epoch"]), list(ck["history"]), ck["best"]
        say(f"resuming from {last}: {start} epoch(s) done")
    say(
        f"training {c['model'].get('name')} on {dev} for {c['epochs']} epochs: "
        f"{len(sampler)} items/epoch {sampler.counts()}, {len(val_items)} val items"
    )

    # created after any resume: the capture must see the restored optimizer state
    step = GraphedTrainStep(model, opt, c, dev) if c["cuda_graphs"] and dev.type == "cuda" else None
    for epoch in range(start, c["epochs"]):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        row = _train_epoch(
            model, opt, loader, c, dev, epoch, conditions, progress, on_batch, last, step
        )
        row.update(
            evaluate(
                model,
                val_loader,
                dev,
                negatives,
                amp=c["amp"],
                channels_last=channels_last,
                gate=c["gate_with_classifier"],
            )
        )
        row["lr"] = float(opt.param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        score = float(row["val_miou"])
        if _improved(score, best):
            best = {"epoch": epoch + 1, "score": score}
            _save(
                out_dir / "best.pt",
                {"model": _cpu_state(model), "cfg": c, "epoch": epoch + 1, "score": score},
            )
        write_metrics(out_dir, history, best, c)
        _save(
            last,
            {
                "version": CHECKPOINT_VERSION,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch + 1,
                "rng": rng_state(loader, epoch + 1),
                "best": best,
                "history": history,
                "cfg": c,
                "train_videos": len(train_ds),
            },
        )
        fprs = " ".join(f"fpr_{n}={row[f'val_fpr_{n}']:.4f}" for n in negatives)
        say(
            f"epoch {epoch + 1}/{c['epochs']}: loss {row['train_loss']:.4f} "
            f"val mIoU {score:.4f} {fprs} ({row['seconds']:.1f}s, {row['train_items']} items)"
        )
        if _PREEMPT.is_set():
            raise Preempted(epoch + 1, last)

    final_row = history[-1] if history else {}
    final_score = float(final_row.get("val_miou", math.nan))
    _save(
        out_dir / "final.pt",
        {
            "model": _cpu_state(model),
            "cfg": c,
            "epoch": c["epochs"],
            "score": final_score,
            "metrics": final_row,
        },
    )
    if not history:  # zero epochs: still leave the documented files
        write_metrics(out_dir, history, best, c)
    if best is None:
        best = {"epoch": 0, "score": math.nan}
        _save(
            out_dir / "best.pt",
            {"model": _cpu_state(model), "cfg": c, "epoch": 0, "score": math.nan},
        )
    return {
        "epochs": c["epochs"],
        "start_epoch": start,
        "best_epoch": best["epoch"],
        "best_val_miou": best["score"],
        "final_val_miou": final_score,
        "history": history,
        "final": str(out_dir / "final.pt"),
        "best": str(out_dir / "best.pt"),
        "last": str(last),
    }
