"""Parity with the published code: same weights, same input, logits compared (CPU, fp32).

    .venv/bin/python benchmarks/published_parity.py \
        --avsbench-repo /src/AVSBench --avsegformer-repo /src/AVSegFormer \
        --robust-repo /src/AVSBench-Robust [--size 224] [--formats avsegformer-pvt2,...]

The published repositories are checkouts the user gives (OpenNLPLab/AVSBench,
vvvb-github/AVSegFormer, jiali-home/AVSBench-Robust); their code is imported from there, never
copied. Their model code runs unmodified: ``Tensor.cuda``/``Module.cuda`` are made no-ops while
it runs, and two modules it imports but these runs never call get stand-ins written to a
temporary folder (the compiled ``MultiScaleDeformableAttention`` op, whose absence makes the
published ``MSDeformAttn`` use its own ``grid_sample`` fallback as on any CPU; ``resampy``, used
only to resample WAV files). Their only extra requirement is ``timm`` (already pinned here).

For each format (:data:`avsrobust.models.published.FORMATS`):

1. build the published model (S4 recipe: TPAVI at stages 0-3; AVSegFormer's S4 config) in eval
   mode, and move every weight and BatchNorm statistic off its initial value (seeded noise), so
   that no branch is an identity (TPAVI's zero-initialised W_z, ...);
2. run it on seeded random frames ``[5 * videos, 3, size, size]`` and VGGish log-mel examples
   ``[5 * videos, 1, 96, 64]`` (AVSBench: through its own torchvggish VGGish first);
3. save its ``state_dict()`` (and the VGGish one) as the published training scripts do, convert
   with :func:`~avsrobust.models.published.import_checkpoint`, load the result with
   :func:`avsrobust.evaluate.load_checkpoint` as the evaluate jobs do, and run it on the same
   input;
4. report the largest absolute difference of the logits, and of the other outputs the losses
   read (TPAVI's fused maps and aligned audio; AVSegFormer's mask feature; the robust cosine),
   against the 1e-4 target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import torch  # noqa: E402
import torchvision  # noqa: E402

from avsrobust.evaluate import load_checkpoint  # noqa: E402
from avsrobust.models.published import FORMAT_NAMES, import_checkpoint  # noqa: E402

TOLERANCE = 1e-4
T = 5
DEFAULT_OUT = REPO / "benchmarks" / "out" / "published_parity.json"
#: Top-level module names the published repositories define (dropped between repositories).
PUBLISHED_MODULES = ("model", "ops", "torchvggish", "MultiScaleDeformableAttention", "resampy")
STANDINS = {
    "MultiScaleDeformableAttention.py": (
        '"""Stand-in for the compiled op: raising makes MSDeformAttn use its PyTorch fallback."""\n'
        "def ms_deform_attn_forward(*a, **k):\n    raise RuntimeError('not built')\n"
        "def ms_deform_attn_backward(*a, **k):\n    raise RuntimeError('not built')\n"
    ),
    "resampy.py": (
        '"""Stand-in: imported by the published vggish_input, never called here."""\n'
        "def resample(*a, **k):\n    raise RuntimeError('resampy stand-in')\n"
    ),
}


# ----------------------------------------------------------------------------- published code
@contextlib.contextmanager
def published_code(paths: list[Path], standins: Path) -> Iterator[None]:
    """Import from ``paths`` (first) with the stand-ins; forget those modules afterwards."""
    old_path = list(sys.path)
    sys.path[:0] = [str(p) for p in paths] + [str(standins)]
    try:
        yield
    finally:
        sys.path[:] = old_path
        for name in list(sys.modules):
            if name.split(".")[0] in PUBLISHED_MODULES:
                del sys.modules[name]


@contextlib.contextmanager
def cuda_calls_are_noops() -> Iterator[None]:
    """The published forwards call ``.cuda()`` on new tensors; on a CPU run that is a no-op."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved  # type: ignore[method-assign]


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every float parameter and buffer off its init (BN variances stay positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.add_(torch.randn(t.shape, generator=g) * 0.02)


def build_avsbench(repo: Path, backbone: str, tmp: Path, standins: Path) -> tuple[Any, Any]:
    """AVSBench ``Pred_endecoder`` (TPAVI at stages 0-3, audio-visual flag) and its VGGish."""
    root = repo / "avs_scripts" / "avs_s4"
    with published_code([root], standins):
        from model import PVT_AVSModel, ResNet_AVSModel  # type: ignore[import-not-found]
        from model.pvt import pvt_v2_b5  # type: ignore[import-not-found]
        from torchvggish import vggish  # type: ignore[import-not-found]

        # the constructor loads ImageNet weights from the config's paths: give it files
        r50, pvt = tmp / "resnet50.pth", tmp / "pvt_v2_b5.pth"
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
        torch.save(pvt_v2_b5().state_dict(), pvt)
        train = types.SimpleNamespace(
            PRETRAINED_RESNET50_PATH=str(r50),
            PRETRAINED_PVTV2_PATH=str(pvt),
            FREEZE_AUDIO_EXTRACTOR=False,
            PREPROCESS_AUDIO_TO_LOG_MEL=False,
            POSTPROCESS_LOG_MEL_WITH_PCA=False,
        )
        cfg = types.SimpleNamespace(TRAIN=train)
        cls = ResNet_AVSModel if backbone == "r50" else PVT_AVSModel
        model = cls.Pred_endecoder(
            channel=256, config=cfg, tpavi_stages=[0, 1, 2, 3], tpavi_va_flag=True
        )
        audio = vggish.VGGish(cfg, torch.device("cpu"))
    return model, audio


def build_avsegformer(root: Path, backbone: str, robust: bool, standins: Path) -> Any:
    """AVSegFormer (or AVSegFormer_robust) from the repository's own S4 config."""
    name = "pvt2" if backbone == "pvt" else "res50"
    cfg = runpy.run_path(str(root / "config" / "s4" / f"AVSegFormer_{name}_s4.py"))["model"]
    cfg["backbone"]["init_weights_path"] = None  # random init: perturbed below anyway
    cfg["vggish"]["freeze_audio_extractor"] = False  # do not read its weight file
    if robust:
        cfg["type"] = "AVSegFormer_robust"
    with published_code([root], standins):
        import model as pkg  # type: ignore[import-not-found]

        return pkg.build_model(**cfg)


def _facts(state: dict[str, torch.Tensor]) -> list[list[Any]]:
    """``[key, shape, dtype]`` of every entry, in the file's order."""
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]


# ----------------------------------------------------------------------------- comparison
def _diff(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    ours, ref = ours.detach().double(), ref.detach().double()
    if ours.shape != ref.shape:
        raise AssertionError(
            f"shapes differ: ours {tuple(ours.shape)}, published {tuple(ref.shape)}"
        )
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    return {"max_abs": err, "ref_max_abs": scale, "max_rel": err / scale if scale else 0.0}


def run_format(
    fmt: str, repos: dict[str, Path], size: int, videos: int, seed: int, tmp: Path, standins: Path
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    n = videos * T
    frames = torch.randn(n, 3, size, size, generator=g)
    audio = torch.randn(n, 1, 96, 64, generator=g)
    ckpt, vgg_file, out_file = tmp / f"{fmt}.pth", None, tmp / f"{fmt}.pt"
    t0 = time.perf_counter()
    with torch.no_grad(), cuda_calls_are_noops():
        if fmt.startswith("avsbench-tpavi"):
            model, vgg = build_avsbench(repos["avsbench"], fmt.rsplit("-", 1)[1][:3], tmp, standins)
            perturb(model, seed + 1)
            perturb(vgg, seed + 2)
            model.eval()
            vgg.eval()
            pred, v_maps, a_feas = model(frames, vgg(audio))
            ref = {"logits": pred}
            for i in range(4):
                ref[f"av_visual_{i}"] = v_maps[i]  # relu'd in place by the decoder
                ref[f"av_audio_{i}"] = a_feas[i].reshape(n, -1)
            vgg_file = tmp / "vggish.pth"
            torch.save(vgg.state_dict(), vgg_file)
        else:
            robust = fmt == "avsbench-robust-avsegformer"
            root = (
                repos["robust"] / "training_evaluation" / "code" / "AVSegFormer"
                if robust
                else repos["avsegformer"]
            )
            model = build_avsegformer(
                root, "r50" if fmt.endswith("r50") else "pvt", robust, standins
            )
            perturb(model, seed + 1)
            model.eval()
            outs = model(audio, frames)
            ref = {"logits": outs[0], "mask_feature": outs[1]}
            if robust:
                ref["sounding"] = outs[2]
        torch.save(model.state_dict(), ckpt)  # as the published train.py: module.state_dict()
        facts = {"checkpoint": _facts(model.state_dict())}
        if vgg_file is not None:
            facts["vggish"] = _facts(vgg.state_dict())
        t_pub = time.perf_counter() - t0
        del model
        cfg = import_checkpoint(fmt, ckpt, out_file, vgg_file)
        ours_model, _ = load_checkpoint(out_file, torch.device("cpu"))
        out = ours_model(frames, audio)
    ours = {"logits": out["logits"]}
    if "av_visual_0" in ref:
        for i, (v, a) in enumerate(out["av_pairs"]):
            ours[f"av_visual_{i}"], ours[f"av_audio_{i}"] = v, a
    if "mask_feature" in ref:
        ours["mask_feature"] = out["mask_feature"]
    if "sounding" in ref:
        ours["sounding"] = out["sounding"]
    diffs = {k: _diff(ours[k], ref[k]) for k in ref}
    worst = max(d["max_abs"] for d in diffs.values())
    return {
        "format": fmt,
        "input": [n, 3, size, size],
        "dropped": cfg["imported"]["dropped"],
        "outputs": diffs,
        "logits_max_abs": diffs["logits"]["max_abs"],
        "worst_max_abs": worst,
        "pass": worst <= TOLERANCE,
        "seconds_published": t_pub,
        "facts": facts,
        "seconds_total": time.perf_counter() - t0,
    }


def write_facts(path: Path, rows: list[dict[str, Any]]) -> None:
    """Deterministic gzipped JSON ``{"formats": {fmt: {"checkpoint": [...], "vggish": [...]}}}``."""
    import gzip

    doc = {
        "about": "keys, shapes and dtypes of the state dicts the published code saves, recorded "
        "by benchmarks/published_parity.py --facts from the published model classes",
        "torch": torch.__version__,
        "formats": {r["format"]: r["facts"] for r in rows},
    }
    data = json.dumps(doc, indent=0, sort_keys=False).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)


# ----------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avsbench-repo", type=Path, help="OpenNLPLab/AVSBench checkout")
    ap.add_argument("--avsegformer-repo", type=Path, help="vvvb-github/AVSegFormer checkout")
    ap.add_argument("--robust-repo", type=Path, help="jiali-home/AVSBench-Robust checkout")
    ap.add_argument("--formats", default=None, help="comma list (default: all with a repo)")
    ap.add_argument("--size", type=int, default=224, help="frame size (a multiple of 32)")
    ap.add_argument("--videos", type=int, default=1, help="videos per batch (5 frames each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--facts",
        type=Path,
        default=None,
        help="also write the published state dicts' keys, shapes and dtypes (gzipped JSON: "
        "tests/data/published_state_dicts.json.gz is made so)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repos = {
        k: v
        for k, v in (
            ("avsbench", args.avsbench_repo),
            ("avsegformer", args.avsegformer_repo),
            ("robust", args.robust_repo),
        )
        if v is not None
    }
    need = {
        "avsbench-tpavi-r50": "avsbench",
        "avsbench-tpavi-pvt2": "avsbench",
        "avsegformer-r50": "avsegformer",
        "avsegformer-pvt2": "avsegformer",
        "avsbench-robust-avsegformer": "robust",
    }
    formats = (
        [f.strip() for f in args.formats.split(",") if f.strip()]
        if args.formats
        else [f for f in FORMAT_NAMES if need[f] in repos]
    )
    bad = [f for f in formats if f not in FORMAT_NAMES]
    if bad:
        ap.error(f"unknown format(s) {bad}; valid: {', '.join(FORMAT_NAMES)}")
    missing = sorted({need[f] for f in formats} - set(repos))
    if missing or not formats:
        ap.error(
            f"give the repositories: {', '.join('--' + m + '-repo' for m in missing) or 'any'}"
        )
    torch.manual_seed(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        standins = tmp / "standins"
        standins.mkdir()
        for name, text in STANDINS.items():
            (standins / name).write_text(text)
        for fmt in formats:
            print(f"-- {fmt}", flush=True)
            row = run_format(fmt, repos, args.size, args.videos, args.seed, tmp, standins)
            for key, d in row["outputs"].items():
                print(
                    f"   {key:<14} max |ours - published| {d['max_abs']:.2e} "
                    f"(|published| <= {d['ref_max_abs']:.2e})"
                )
            print(
                f"   {'PASS' if row['pass'] else 'FAIL'} ({row['seconds_total']:.0f} s)", flush=True
            )
            rows.append(row)
            for f in tmp.glob(f"{fmt}.*"):
                f.unlink()
    doc = {
        "benchmark": "published_parity",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "tolerance": TOLERANCE,
        "size": args.size,
        "videos": args.videos,
        "seed": args.seed,
        "results": rows,
    }
    if args.facts is not None:
        write_facts(args.facts, rows)
    for r in rows:
        r.pop("facts")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(f"{'format':<30} {'logits max abs':>15} {'worst output':>13}  result")
    for r in rows:
        print(
            f"{r['format']:<30} {r['logits_max_abs']:>15.2e} {r['worst_max_abs']:>13.2e}  "
            f"{'PASS' if r['pass'] else 'FAIL'}"
        )
    print(f"\nfigures: {args.out}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
