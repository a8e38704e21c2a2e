"""Benchmark: training throughput (videos/s, frames/s, peak memory, MFU) with real data loading.

    .venv/bin/python benchmarks/train_throughput.py                       # auto device
    .venv/bin/python benchmarks/train_throughput.py --device cuda --out benchmarks/out/tt.json

Builds a small synthetic AVSBench S4 tree (``avsrobust.synthetic``, ``--videos`` train
videos at the largest size asked for), its frame caches (each model's training size,
:data:`MODEL_SIZE`: 224 px for ``tpavi`` (ResNet-50) and ``tpavi_pvt``, 512 px for
``avsegformer_r50`` / ``avsegformer_pvt`` with their Dice + mix loss, 64 px for ``small``;
``--size`` sets one size for all) and real
VGGish log-mel features (``avsrobust.features``) for the positive audio and for silence,
white noise and off-screen (a donor clip's) audio, then times full training steps of
``avsrobust.train`` -- ``flatten_batch``, forward, ``total_loss``, backward, optimizer
step -- over ``build_loader(AVSDataset, RobustSampler)`` with the robust experiment's
negative ratios, after warm-up steps, synchronising CUDA around the timed loop.

Each case reports videos/s, frames/s (5 frames per video), ms/step, peak memory (CUDA:
``torch.cuda.max_memory_allocated`` from the model's creation on, warm-up and CUDA-graph
capture included; CPU: peak RSS from ``resource.getrusage``, each case
in its own process), achieved model TFLOP/s and MFU: model FLOPs of one forward+backward
step (``torch.utils.flop_counter.FlopCounterMode`` on the meta device) per second over the
device's peak dense bf16 FLOP/s (``--peak-tflops``; known GPUs are detected by name,
e.g. H100 SXM / H200 989 TFLOP/s; "n/a" on the CPU unless given).

Cases: ``loader`` (real data loading) and ``synthetic`` (tensors resident on the device,
no data loading: the figure comparable with the published AVSBench code's), crossed with
``--deterministic`` and ``--cuda-graphs`` / ``--compile`` (the training config keys of
the same names). On CUDA ``tpavi`` also gets ``fp32`` (no autocast, NCHW, deterministic:
the published code's precision) and ``legacy`` (the training settings before the speed
work: eager steps, deterministic mode with NaN-filled allocations, multi-tensor AdamW;
model and loss code are today's, so it is not the old code's figure), and each model a
``data`` case (the loader alone, batches copied to the device).

``--profile N`` adds, for each eager synthetic CUDA case, a torch.profiler table of the
top CUDA ops over N steps and CUDA-event times of the step's phases and of each block's
forward (printed, and under ``profile`` in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avsrobust import frame_cache as FC  # noqa: E402
from avsrobust.cuda_graphs import GraphedTrainStep  # noqa: E402
from avsrobust.data import AVSDataset, RobustSampler, build_loader  # noqa: E402
from avsrobust.layout import N_FRAMES, positive_wav  # noqa: E402
from avsrobust.losses import total_loss  # noqa: E402
from avsrobust.models import build_model  # noqa: E402
from avsrobust.optim import build_optimizer  # noqa: E402
from avsrobust.resume import seed_everything  # noqa: E402
from avsrobust.row_index import FEATURE_COLUMNS, write_index  # noqa: E402
from avsrobust.runtime import determinism  # noqa: E402
from avsrobust.runtime import resolve_device as _resolve_device  # noqa: E402
from avsrobust.step import autocast, flatten_batch, train_step  # noqa: E402
from avsrobust.train import prepare_model  # noqa: E402
from avsrobust.train_config import resolve_config  # noqa: E402

#: Frame size per model: the published training sizes (AVSegFormer's released checkpoints were
#: trained at 512 px); ``--size`` overrides them all.
MODEL_SIZE = {
    "tpavi": 224,
    "tpavi_pvt": 224,
    "avsegformer_r50": 512,
    "avsegformer_pvt": 512,
    "small": 64,
}
MODEL_CFG: dict[str, dict[str, Any]] = {
    "tpavi": {"name": "tpavi"},
    "tpavi_pvt": {"name": "tpavi", "backbone": "pvt_v2_b5"},
    "avsegformer_r50": {"name": "avsegformer", "backbone": "resnet50"},
    "avsegformer_pvt": {"name": "avsegformer", "backbone": "pvt_v2_b5"},
    "small": {"name": "small", "classifier": True},  # the workflow's default training model
}
#: The published loss of each model (AVSegFormer: Dice + 0.1 x mix); others: the default.
MODEL_LOSS: dict[str, dict[str, Any]] = {
    "avsegformer_r50": {"kind": "dice+mix"},
    "avsegformer_pvt": {"kind": "dice+mix"},
}
#: The measured robust mix (twice config/config.yaml's robust experiment: more negatives
#: per batch, so every batch mixes conditions).
NEGATIVE_RATIOS = {"silence": 0.25, "noise": 0.25, "offscreen": 0.5}
#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment, first match.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)
DEFAULT_OUT = REPO / "benchmarks" / "out" / "train_throughput.json"
DEFAULT_DATA = REPO / "benchmarks" / "out" / "train_throughput_data"


# ----------------------------------------------------------------------------- data
def _write_index(path: Path, clips: list, root: Path) -> None:
    write_index(
        path, FEATURE_COLUMNS, ((c.video, c.category, positive_wav(root, c)) for c in clips)
    )


def prepare_data(data_dir: Path, videos: int, sizes: list[int], seed: int = 0) -> dict[int, Any]:
    """Synthetic S4 train split + frame caches at ``sizes`` + features; reused when present.

    Returns ``size -> (cache_dir, {condition: (npy, index)})``.
    """
    from avsrobust.features import extract_features, vggish_logmel
    from avsrobust.metadata import read_clips
    from avsrobust.negatives import make_noise, make_silence
    from avsrobust.seeding import item_rng
    from avsrobust.synthetic import SyntheticConfig, generate
    from avsrobust.wav import AudioFormat

    data_dir = Path(data_dir)
    root, feats = data_dir / "avsbench", data_dir / "features"
    stamp = data_dir / "stamp.json"
    want = {"videos": videos, "seed": seed, "image_size": max(sizes), "v": 1}
    t0 = time.perf_counter()
    fresh = not (stamp.is_file() and json.loads(stamp.read_text()) == want)
    if fresh:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
        cfg = SyntheticConfig(
            seed=seed, s4_videos={"train": videos}, ms3_videos={}, image_size=want["image_size"]
        )
        generate(root, cfg, datasets=("s4",), workers=min(8, os.cpu_count() or 1))
    clips = [c for c in read_clips(root, "s4") if c.split == "train"]
    files = {cond: (feats / f"{cond}.npy", feats / f"{cond}.index.tsv") for cond in _conds()}
    if fresh:
        feats.mkdir(parents=True, exist_ok=True)
        wavs = [positive_wav(root, c) for c in clips]
        extract_features(wavs, files["positive"][0], batch_size=64)
        pos = np.load(files["positive"][0])
        fmt = AudioFormat()
        for neg in ("silence", "noise"):
            waves = []
            for c in clips:
                rng = item_rng(seed, "s4", "train", c.video, neg)
                x = make_silence(fmt, rng) if neg == "silence" else make_noise(fmt, rng)
                waves.append(np.round(x[:, 0] * 32767.0) / 32768.0)  # as read from int16
            arr = vggish_logmel(torch.from_numpy(np.stack(waves).astype(np.float32)))
            np.save(files[neg][0], arr.numpy())
        # off-screen audio = a donor clip of another category, conformed to the same format:
        # its features are the donor's positive features
        donors = []
        for i, c in enumerate(clips):
            j = next(
                (k % len(clips))
                for k in range(i + 1, i + len(clips))
                if clips[k % len(clips)].category != c.category
            )
            donors.append(j)
        np.save(files["offscreen"][0], pos[donors])
        for cond in _conds():
            _write_index(files[cond][1], clips, root)
    out = {}
    for size in sizes:
        cache = data_dir / f"frame_cache_{size}"
        if fresh or not (cache / FC.INDEX_FILE).is_file():
            FC.build_cache(root, clips, cache, size, workers=min(8, os.cpu_count() or 1))
        out[size] = (cache, files)
    if fresh:
        stamp.write_text(json.dumps(want))
    print(f"data: {len(clips)} videos in {data_dir} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def _conds() -> tuple[str, ...]:
    return ("positive", *NEGATIVE_RATIOS)


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    model: str
    data: str  # loader | synthetic | data (loader only, no training)
    amp: bool
    channels_last: bool
    deterministic: bool
    cuda_graphs: bool = False
    compile: bool = False
    legacy: bool = False  # pre-optimisation defaults: NaN fill + multi-tensor AdamW

    @property
    def name(self) -> str:
        if self.data == "data":
            return f"{self.model}/data-only"
        bits = [self.model, self.data, "bf16" if self.amp else "fp32"]
        if self.channels_last:
            bits.append("cl")
        bits.append("det" if self.deterministic else "nondet")
        if self.cuda_graphs:
            bits.append("graphs")
        if self.compile:
            bits.append("compile")
        if self.legacy:
            bits.append("legacy")
        return "/".join(bits)


def _choices(value: str) -> list[bool]:
    return {"on": [True], "off": [False], "both": [True, False]}[value]


def build_cases(args: argparse.Namespace, dev: torch.device) -> list[Case]:
    cuda = dev.type == "cuda"
    cases: list[Case] = []
    for model in args.models:
        if cuda and "loader" in args.data:
            cases.append(Case(model, "data", cuda, cuda, True))
        for data in args.data:
            for det in _choices(args.deterministic):
                for graphs in _choices(args.cuda_graphs) if cuda else [False]:
                    for comp in _choices(args.compile):
                        if graphs and comp:
                            continue
                        cases.append(Case(model, data, cuda, cuda, det, graphs, comp))
        if cuda and model == "tpavi" and args.reference and "synthetic" in args.data:
            cases.append(Case(model, "synthetic", True, True, True, legacy=True))
            cases.append(Case(model, "synthetic", False, False, True, legacy=True))
    return cases


def _train_cfg(case: Case, batch_size: int, workers: int) -> dict[str, Any]:
    return resolve_config(
        {
            "model": MODEL_CFG[case.model],
            "loss": MODEL_LOSS.get(case.model, {}),
            "batch_size": batch_size,
            "workers": workers,
            "negative_ratios": NEGATIVE_RATIOS,
            "amp": case.amp,
            "channels_last": case.channels_last,
            "deterministic": case.deterministic,
            "cuda_graphs": case.cuda_graphs,
            "compile": case.compile,
        }
    )


# ----------------------------------------------------------------------------- FLOPs, peak
_FLOPS: dict[tuple, int | None] = {}


def step_flops(model: str, size: int, n: int) -> int | None:
    """Model FLOPs of one forward + backward step on ``n`` frames (meta device, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    key = (model, size, n)
    if key not in _FLOPS:
        try:
            with torch.device("meta"):
                m = build_model(MODEL_CFG[model])
                x = _synthetic_batch(n, size, torch.device("meta"))
            with FlopCounterMode(display=False) as fc:
                out = m(x["frames"], x["audio"])
                loss, _ = total_loss(out, x, {"loss": MODEL_LOSS.get(model, {})})
                loss.backward()
            _FLOPS[key] = int(fc.get_total_flops())
        except Exception as exc:  # noqa: BLE001 - a figure we can go without
            print(f"FLOP count failed for {model}: {exc}", file=sys.stderr)
            _FLOPS[key] = None
    return _FLOPS[key]


def peak_tflops(dev: torch.device, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "--peak-tflops"
    if dev.type != "cuda":
        return None, "n/a on CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(dev)
    for frag, tf in PEAK_TFLOPS:
        if frag in name:
            return tf, f"{name}: dense bf16 {tf:g} TFLOP/s"
    return None, f"{name}: unknown peak (give --peak-tflops)"


# ----------------------------------------------------------------------------- one case
def _synthetic_batch(n: int, size: int, dev: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if dev.type == "meta":
        r = lambda *s: torch.empty(*s, device=dev)  # noqa: E731
    else:
        r = lambda *s: torch.randn(*s, generator=g).to(dev)  # noqa: E731
    valid = torch.zeros(n, dtype=torch.bool)
    valid[::N_FRAMES] = True  # S4 train: first frame annotated
    return {
        "frames": r(n, 3, size, size),
        "audio": r(n, 1, 96, 64),
        "masks": (r(n, 1, size, size) > 1).float(),
        "mask_valid": valid.to(dev),
        "sounding": torch.ones(n).to(dev),
    }


def _batches(loader: Any, sampler: RobustSampler) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


@contextlib.contextmanager
def _legacy_fill(on: bool) -> Iterator[None]:
    """Re-enable the NaN fill of new tensors that deterministic mode used to add."""
    mod = torch.utils.deterministic
    old = mod.fill_uninitialized_memory
    if on:
        mod.fill_uninitialized_memory = True
    try:
        yield
    finally:
        mod.fill_uninitialized_memory = old


def run_case(case: Case, args: argparse.Namespace, data: dict, dev: torch.device) -> dict:
    size = model_size(case.model, args)
    cuda = dev.type == "cuda"
    if cuda:
        steps = args.steps or (100 if case.model == "small" else 50)
        warmup = args.warmup if args.warmup is not None else 10
    else:
        steps = args.steps or (10 if case.model == "small" else 1)
        warmup = args.warmup if args.warmup is not None else (2 if case.model == "small" else 1)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1))
    if not cuda and args.workers is None:
        workers = 1
    c = _train_cfg(case, args.batch_size, workers)
    row: dict[str, Any] = {"case": case.name, **asdict(case), "image_size": size}
    row.update(batch_size=args.batch_size, workers=workers, warmup=warmup, steps=steps)
    seed_everything(0)
    cache, files = data[size]
    ds = AVSDataset(cache, files, _conds())
    loader = sampler = None
    if case.data in ("loader", "data"):
        sampler = RobustSampler(ds, NEGATIVE_RATIOS, seed=0)
        loader = build_loader(ds, sampler, args.batch_size, workers, dev, seed=0)
        row["items_per_epoch"] = len(sampler)
    cl = c["channels_last"] and cuda
    n = args.batch_size * N_FRAMES
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)

    if case.data == "data":  # the loader alone: batches to the device, no model
        it = _batches(loader, sampler)
        for _ in range(warmup):
            flatten_batch(next(it), dev, cl)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps * 2):
            x = flatten_batch(next(it), dev, cl)
        _sync(dev)
        dt = time.perf_counter() - t0
        del it, x, loader
        row.update(seconds=dt, steps=steps * 2, videos_per_s=steps * 2 * args.batch_size / dt)
        row["frames_per_s"] = row["videos_per_s"] * N_FRAMES
        row["ms_per_step"] = 1000 * dt / (steps * 2)
        return row

    with determinism(c["deterministic"]), _legacy_fill(case.legacy):
        model = prepare_model(c, dev)
        if case.legacy:
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=c["lr"], weight_decay=c["weight_decay"])
        else:
            opt = build_optimizer(model, c, dev)
        model.train()
        graphed = GraphedTrainStep(model, opt, c, dev) if c["cuda_graphs"] else None

        def step(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if graphed is not None:
                return graphed(x)
            return train_step(model, opt, x, c, dev)

        if case.data == "loader":
            it = _batches(loader, sampler)

            def get() -> dict[str, torch.Tensor]:
                return flatten_batch(next(it), dev, cl)
        else:
            fixed = _synthetic_batch(n, size, dev)
            if cl:
                fixed["frames"] = fixed["frames"].contiguous(memory_format=torch.channels_last)

            def get() -> dict[str, torch.Tensor]:
                return fixed

        t_compile = time.perf_counter()
        for _ in range(warmup):
            step(get())
        _sync(dev)
        row["warmup_seconds"] = time.perf_counter() - t_compile
        # no reset of the peak here: a CUDA graph's memory is allocated at capture
        sums: dict[str, torch.Tensor] = {}
        wait = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            tw = time.perf_counter()
            x = get()
            wait += time.perf_counter() - tw
            parts = step(x)
            for k, v in parts.items():  # as the training loop does: no host sync per step
                sums[k] = sums[k] + v if k in sums else v.clone()
        _sync(dev)
        dt = time.perf_counter() - t0
        loss = float(sums["total"]) / steps
        eager = not (case.legacy or case.cuda_graphs or case.compile)
        if args.profile and cuda and case.data == "synthetic" and eager:
            row["profile"] = profile_steps(model, opt, c, step, get, dev, args.profile)
        if graphed is not None:
            row["graph_replays"], row["eager_steps"] = graphed.replays, graphed.eager_steps
        model = opt = graphed = None  # free the GPU memory before the next case
    if case.data == "loader":
        del it
    del loader
    flops = step_flops(case.model, size, n)
    row.update(
        seconds=dt,
        ms_per_step=1000 * dt / steps,
        videos_per_s=steps * args.batch_size / dt,
        frames_per_s=steps * n / dt,
        data_wait_ms_per_step=1000 * wait / steps,
        mean_loss=loss,
        flops_per_step=flops,
    )
    if flops:
        row["model_tflops_per_s"] = flops * steps / dt / 1e12
    if cuda:
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        row["peak_mem_kind"] = "torch.cuda.max_memory_allocated"
    else:
        row["peak_mem_mib"] = _rss_mib()
        row["peak_mem_kind"] = "peak RSS (getrusage, this case's process)"
        row["peak_rss_workers_mib"] = _rss_mib(resource.RUSAGE_CHILDREN)
    return row


def _profiled_modules(model: torch.nn.Module) -> list[str]:
    """Top-level blocks: children of the model, of its containers, backbone and decoder."""
    mods = dict(model.named_modules())
    out = []
    for name, mod in mods.items():
        if not name or name in ("backbone", "decoder"):
            continue
        if isinstance(mod, torch.nn.ModuleList | torch.nn.ModuleDict):
            continue
        parent = name.rpartition(".")[0]
        pmod = mods[parent] if parent else model
        if (
            not parent
            or parent in ("backbone", "decoder")
            or isinstance(pmod, torch.nn.ModuleList | torch.nn.ModuleDict)
        ):
            out.append(name)
    return out


def event_breakdown(model: Any, opt: Any, c: dict, get: Any, dev: torch.device, steps: int):
    """CUDA-event times of the step's phases and of each block's forward (eager step)."""
    mods = dict(model.named_modules())
    names = _profiled_modules(model)
    marks: dict[str, list] = {n: [] for n in names}
    handles = []

    def pre(name: str):
        def hook(*_: Any) -> None:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks[name].append([ev, None])

        return hook

    def post(name: str):
        def hook(*_: Any) -> None:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks[name][-1][1] = ev

        return hook

    for name in names:
        handles.append(mods[name].register_forward_pre_hook(pre(name)))
        handles.append(mods[name].register_forward_hook(post(name)))
    phases = {"forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    try:
        for _ in range(steps):
            x = get()
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(5)]
            ev[0].record()
            with autocast(dev, c["amp"]):
                out = model(x["frames"], x["audio"])
            ev[1].record()
            loss, _ = total_loss(out, x, c)
            ev[2].record()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ev[3].record()
            opt.step()
            ev[4].record()
            torch.cuda.synchronize(dev)
            for i, k in enumerate(phases):
                phases[k] += ev[i].elapsed_time(ev[i + 1]) / steps
            del out, loss
    finally:
        for h in handles:
            h.remove()
    torch.cuda.synchronize(dev)
    fwd = {n: sum(a.elapsed_time(b) for a, b in v) / steps for n, v in marks.items() if v}
    return phases, dict(sorted(fwd.items(), key=lambda kv: -kv[1]))


def profile_steps(model: Any, opt: Any, c: dict, step: Any, get: Any, dev: torch.device, n: int):
    """torch.profiler over ``n`` steps (top CUDA ops), plus :func:`event_breakdown`."""
    from torch.profiler import ProfilerActivity, profile

    res: dict[str, Any] = {"steps": n}
    try:
        phases, fwd = event_breakdown(model, opt, c, get, dev, n)
        res["phase_ms"], res["forward_module_ms"] = phases, fwd
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        res["event_error"] = f"{type(exc).__name__}: {exc}"
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(n):
                step(get())
            _sync(dev)
            wall = time.perf_counter() - t0
        avgs = prof.key_averages()
        rows = []
        for e in avgs:
            dev_self = getattr(e, "self_device_time_total", None)
            if dev_self is None:
                dev_self = getattr(e, "self_cuda_time_total", 0)
            rows.append(
                {
                    "name": e.key,
                    "calls": e.count / n,
                    "self_device_ms": dev_self / 1000 / n,
                    "self_cpu_ms": e.self_cpu_time_total / 1000 / n,
                }
            )
        res["wall_ms_per_step"] = 1000 * wall / n
        kernels = [e for e in avgs if "CUDA" in str(getattr(e, "device_type", ""))]
        busy = sum(getattr(e, "self_device_time_total", 0) for e in kernels)
        res["device_busy_ms_per_step"] = busy / 1000 / n
        res["cpu_ops_per_step"] = sum(r["calls"] for r in rows if r["self_cpu_ms"] > 0)
        res["top_ops"] = sorted(rows, key=lambda r: -r["self_device_ms"])[:25]
        for sort in ("self_device_time_total", "self_cuda_time_total"):
            try:
                res["table"] = avgs.table(sort_by=sort, row_limit=30, max_name_column_width=70)
                break
            except Exception:  # noqa: BLE001 - older/newer column names
                continue
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        res["profiler_error"] = f"{type(exc).__name__}: {exc}"
    return res


# ----------------------------------------------------------------------------- driver
def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows: list[dict], peak: float | None) -> None:
    head = (
        f"{'case':<44} {'videos/s':>9} {'frames/s':>9} {'ms/step':>8} {'peak MiB':>9} "
        f"{'TFLOP/s':>8} {'MFU':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<44} error: {r['error']}")
            continue
        tf = r.get("model_tflops_per_s")
        mfu = f"{100 * tf / peak:.1f}%" if tf and peak else "n/a"
        print(
            f"{r['case']:<44} {r['videos_per_s']:>9.1f} {r['frames_per_s']:>9.1f} "
            f"{r['ms_per_step']:>8.1f} {_fmt(r.get('peak_mem_mib'), '9.0f'):>9} "
            f"{_fmt(tf, '8.1f'):>8} {mfu:>6}"
        )


def machine_info(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(
            gpu=torch.cuda.get_device_name(dev),
            gpu_memory_gib=p.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument(
        "--models",
        default="tpavi,small",
        help=f"comma list of {', '.join(MODEL_SIZE)} (tpavi = ResNet-50)",
    )
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="frame size of every case (default: each model's training size, MODEL_SIZE)",
    )
    ap.add_argument(
        "--data",
        default=None,
        help="comma list of loader, synthetic (default: both on CUDA, loader on the CPU)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps (default CUDA 50, small 100; CPU 1, small 10)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps first (default CUDA 10; CPU 1, small 2)",
    )
    ap.add_argument("--batch-size", type=int, default=4, help="videos per batch (5 frames each)")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers (default CUDA min(8, cores), CPU 1)",
    )
    ap.add_argument(
        "--deterministic",
        default=None,
        choices=("on", "off", "both"),
        help="training.deterministic (default both on CUDA, on on the CPU)",
    )
    ap.add_argument(
        "--cuda-graphs",
        default="both",
        choices=("on", "off", "both"),
        help="training.cuda_graphs (CUDA only; default both)",
    )
    ap.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=("on", "off", "both"),
        help="training.compile (torch.compile)",
    )
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip tpavi's fp32 and legacy synthetic cases (CUDA)",
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak dense bf16 TFLOP/s for MFU (default: by GPU name)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="torch.profiler over STEPS steps of each eager synthetic CUDA case",
    )
    ap.add_argument("--videos", type=int, default=48, help="synthetic S4 train videos")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--prepare-only", action="store_true", help="build the data, time nothing")
    ap.add_argument(
        "--isolate",
        default="auto",
        choices=("auto", "on", "off"),
        help="one process per case (auto: on on the CPU, for per-case peak RSS)",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON figures")
    ap.add_argument("--run-case", help=argparse.SUPPRESS)  # internal: one case, JSON on stdout
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODEL_SIZE]
    if args.size is not None and args.size < 32:
        ap.error("--size must be at least 32")
    if bad:
        ap.error(f"unknown model(s) {bad}; use {', '.join(MODEL_SIZE)}")
    if args.data is not None:
        args.data = [d.strip() for d in args.data.split(",") if d.strip()]
        if not args.data or any(d not in ("loader", "synthetic") for d in args.data):
            ap.error("--data takes loader and/or synthetic")
    return args


def model_size(model: str, args: argparse.Namespace) -> int:
    """Frame size of ``model``'s cases: ``--size`` or its :data:`MODEL_SIZE`."""
    return args.size if args.size is not None else MODEL_SIZE[model]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return _resolve_device(name)


def _child(case: Case, argv: list[str]) -> dict:
    """Run one case in a fresh interpreter (clean peak RSS); its row comes back as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, *argv, "--run-case", json.dumps(asdict(case))]
        cmd += ["--out", str(out)]
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not out.is_file():
            return {"case": case.name, "error": f"case process exited {proc.returncode}"}
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    if args.data is None:
        args.data = ["loader", "synthetic"] if cuda else ["loader"]
    if args.deterministic is None:
        args.deterministic = "both" if cuda else "on"
    sizes = sorted({model_size(m, args) for m in args.models})
    data = prepare_data(args.data_dir, args.videos, sizes)
    if args.prepare_only:
        return 0
    if args.run_case:
        row = run_case(Case(**json.loads(args.run_case)), args, data, dev)
        args.out.write_text(json.dumps(row))
        return 0

    peak, peak_src = peak_tflops(dev, args.peak_tflops)
    isolate = args.isolate == "on" or (args.isolate == "auto" and not cuda)
    child_argv = _strip_out(argv)
    doc: dict[str, Any] = {
        "benchmark": "train_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/train_throughput.py", *argv]),
        "machine": machine_info(dev),
        "peak_tflops": peak,
        "peak_source": peak_src,
        "settings": {
            "videos": args.videos,
            "batch_size": args.batch_size,
            "frames_per_video": N_FRAMES,
            "negative_ratios": NEGATIVE_RATIOS,
            "image_size": {m: model_size(m, args) for m in args.models},
            "losses": {m: MODEL_LOSS.get(m, {}) for m in args.models},
            "models": MODEL_CFG,
            "isolated_processes": isolate,
        },
        "results": [],
    }
    print(f"device: {doc['machine'].get('gpu', 'CPU')} ({dev}), torch {torch.__version__}")
    print(f"MFU peak: {peak_src}")
    for model in args.models:
        f = step_flops(model, model_size(model, args), args.batch_size * N_FRAMES)
        if f:
            per_video = f / args.batch_size / 1e9
            print(f"{model}: {f / 1e12:.3f} TFLOP per fwd+bwd step ({per_video:.0f} GFLOP/video)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for case in build_cases(args, dev):
        print(f"-- {case.name}", flush=True)
        try:
            row = _child(case, child_argv) if isolate else run_case(case, args, data, dev)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other cases
            row = {"case": case.name, "error": f"{type(exc).__name__}: {exc}"}
            if cuda:
                torch.cuda.empty_cache()
        if peak and row.get("model_tflops_per_s"):
            row["mfu"] = row["model_tflops_per_s"] / peak
        prof = row.get("profile")
        if prof:
            if "table" in prof:
                print(prof.pop("table"))
            for key in ("event_error", "profiler_error"):
                if key in prof:
                    print(f"profile: {prof[key]}")
            if "wall_ms_per_step" in prof:
                print(
                    f"profile: {prof['wall_ms_per_step']:.1f} ms/step wall, "
                    f"{prof['device_busy_ms_per_step']:.1f} ms/step of kernels, "
                    f"{prof['cpu_ops_per_step']:.0f} ops/step"
                )
            if "phase_ms" in prof:
                print(
                    "phases (CUDA events, ms): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in prof["phase_ms"].items())
                )
                for name, ms in prof["forward_module_ms"].items():
                    print(f"  forward {name:<36} {ms:8.2f} ms")
        if "error" not in row:
            print(
                f"   {row['videos_per_s']:.1f} videos/s, {row['ms_per_step']:.1f} ms/step, "
                f"peak {row.get('peak_mem_mib', float('nan')):.0f} MiB",
                flush=True,
            )
        else:
            print(f"   {row['error']}", flush=True)
        doc["results"].append(row)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print_table(doc["results"], peak)
    print(f"\nfigures: {args.out}")
    return 0


def _strip_out(argv: list[str]) -> list[str]:
    """argv without --out (and its value) and --run-case."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--run-case"):
            skip = True
            continue
        if a.startswith(("--out=", "--run-case=")):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
