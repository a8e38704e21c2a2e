"""Benchmark: negative audio + features at S4 scale, workflow vs. a plain loop.

    .venv/bin/python benchmarks/robust_pipeline.py            # full S4 scale (~5 min)
    .venv/bin/python benchmarks/robust_pipeline.py --scale 0.1

Builds an S4-sized synthetic AVSBench tree (3452/740/740 videos, audio only,
plus MS3 296/64/64 for the dry-run), then measures
  (a) `snakemake -n` of the full S4+MS3 DAG,
  (b) negatives (3 types) + features for S4 through the workflow (local profile),
  (c) the same work as one plain single-process loop over the same library calls,
and prints jobs/s, clips/s and the ratio (b)/(c). Targets: (a) < 20 s,
(b) < 300 s, (b)/(c) <= 2. Figures also go to benchmarks/out/robust_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

from avsrobust import layout  # noqa: E402
from avsrobust.manifest import write_manifest  # noqa: E402
from avsrobust.metadata import read_clips  # noqa: E402
from avsrobust.negatives import NegativeSettings, generate_negative  # noqa: E402
from avsrobust.offscreen_plan import plan_donors, write_plan  # noqa: E402
from avsrobust.synthetic import SyntheticConfig, generate  # noqa: E402

NEGATIVES = ("silence", "noise", "offscreen")
S4_FULL = {"train": 3452, "val": 740, "test": 740}
MS3_FULL = {"train": 296, "val": 64, "test": 64}
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def scaled(sizes: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(4, round(v * scale)) for k, v in sizes.items()}


def build_tree(root: Path, cfg: SyntheticConfig) -> float:
    stamp = root / ".bench-config.json"
    wanted = json.dumps([cfg.s4_videos, cfg.ms3_videos, cfg.seed, cfg.image_size])
    if stamp.is_file() and stamp.read_text() == wanted:
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    generate(root, cfg, progress=sys.stderr.isatty(), workers=os.cpu_count() or 1, audio_only=True)
    stamp.write_text(wanted)
    return time.perf_counter() - t0


def write_config(path: Path, root: Path, datasets: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"avsbench_root": str(root), "datasets": datasets, "seed": 0}) + "\n"
    )
    return path


def run_snakemake(workdir: Path, configfile: Path, *extra: str) -> tuple[float, str, int]:
    """Run snakemake from the repo's Snakefile in ``workdir``; (seconds, output, peak KiB)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({' '.join(cmd)}):\n{out[-4000:]}")
    return seconds, out, max(peak, before)


def job_count(output: str) -> int:
    match = re.search(r"^total\s+(\d+)", output, re.M)
    return int(match.group(1)) if match else 0


def plain_loop(root: Path, out: Path, batch_size: int) -> dict[str, float]:
    """The same work as the workflow, one process, same library functions."""
    from avsrobust.features import extract_features  # torch import counted in (c)

    t0 = time.perf_counter()
    clips = read_clips(root, "s4")
    settings = NegativeSettings(seed=0)
    rows, _ = plan_donors(clips, 0, "fail")
    write_plan(out / "robust/s4/offscreen_plan.tsv", rows)
    donors = {r.target.video: r.donor for r in rows}
    t_plan = time.perf_counter()
    by_split: dict[str, list[layout.Clip]] = {}
    for clip in clips:
        by_split.setdefault(clip.split, []).append(clip)
        positive = layout.positive_wav(root, clip)
        for negtype in NEGATIVES:
            donor = (
                layout.positive_wav(root, donors[clip.video]) if negtype == "offscreen" else None
            )
            target = layout.negative_wav(out, "s4", negtype, clip.split, clip.item)
            generate_negative(
                settings, "s4", clip.split, clip.video, negtype, positive, target, donor
            )
    t_neg = time.perf_counter()
    for split, split_clips in by_split.items():
        wavs = [
            layout.negative_wav(out, "s4", n, split, c.item) for n in NEGATIVES for c in split_clips
        ]
        write_manifest(out / f"robust/s4/{split}.manifest.tsv", wavs)
        for condition in ("positive", *NEGATIVES):
            paths = [layout.condition_wav(root, out, c, condition) for c in split_clips]
            extract_features(
                paths, out / f"features/s4/{split}/{condition}.npy", batch_size=batch_size
            )
    t_end = time.perf_counter()
    return {
        "plan_s": t_plan - t0,
        "negatives_s": t_neg - t_plan,
        "features_s": t_end - t_neg,
        "total_s": t_end - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of S4/MS3 sizes")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument(
        "--snakemake-args", default="", help="extra flags for (b), e.g. '--drop-metadata'"
    )
    args = ap.parse_args(argv)

    out = args.out.resolve()
    cfg = SyntheticConfig(
        seed=0,
        s4_videos=scaled(S4_FULL, args.scale),
        ms3_videos=scaled(MS3_FULL, args.scale),
        image_size=32,
    )
    n_s4 = sum(cfg.s4_videos.values())
    root = out / "tree"
    tree_s = build_tree(root, cfg)
    print(
        f"tree: {n_s4} S4 + {sum(cfg.ms3_videos.values())} MS3 videos at {root} "
        f"({'reused' if not tree_s else f'{tree_s:.1f} s'})"
    )

    # (a) dry-run of the full S4 + MS3 DAG
    cfg_a = write_config(out / "work_a" / "config.json", root, ["s4", "ms3"])
    shutil.rmtree(out / "work_a" / ".snakemake", ignore_errors=True)
    dry_s, dry_out, dry_kib = run_snakemake(out / "work_a", cfg_a, "-n", "--quiet", "rules")
    dry_jobs = job_count(dry_out)

    # (b) the workflow, S4 negatives + features
    work_b = out / "work_b"
    shutil.rmtree(work_b, ignore_errors=True)
    cfg_b = write_config(out / "config_b.json", root, ["s4"])
    extra = args.snakemake_args.split()
    # The audio-only tree has no frames, so the input check (check_inputs) is not asked for.
    targets = [f"results/robust/s4/{split}.manifest.tsv" for split in cfg.s4_videos] + [
        f"results/features/s4/{split}/{c}.npy"
        for split in cfg.s4_videos
        for c in ("positive", *NEGATIVES)
    ]
    wf_s, wf_out, wf_kib = run_snakemake(
        work_b, cfg_b, *targets, "--cores", "2", *extra, "--quiet", "rules"
    )
    wf_jobs = job_count(wf_out)

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "s4_videos": n_s4,
        "snakemake_args": extra,
        "dry_run": {
            "seconds": dry_s,
            "jobs": dry_jobs,
            "jobs_per_s": dry_jobs / dry_s,
            "peak_rss_mib": dry_kib / 1024,
        },
        "workflow": {
            "seconds": wf_s,
            "jobs": wf_jobs,
            "jobs_per_s": wf_jobs / wf_s,
            "negative_clips_per_s": 3 * n_s4 / wf_s,
            "peak_rss_mib": wf_kib / 1024,
        },
    }
    if not args.skip_loop:
        loop_dir = out / "loop_c"
        shutil.rmtree(loop_dir, ignore_errors=True)
        loop = plain_loop(root, loop_dir, args.batch_size)
        figures["loop"] = {**loop, "negative_clips_per_s": 3 * n_s4 / loop["total_s"]}
        figures["ratio_workflow_over_loop"] = wf_s / loop["total_s"]
        same = all(
            (loop_dir / "robust/s4" / f"{s}.manifest.tsv").read_text().split("\n")[1:]
            and _sums(loop_dir / "robust/s4" / f"{s}.manifest.tsv")
            == _sums(work_b / "results/robust/s4" / f"{s}.manifest.tsv")
            for s in cfg.s4_videos
        )
        figures["loop_and_workflow_same_bytes"] = same

    d, w = figures["dry_run"], figures["workflow"]
    print(
        f"(a) dry-run S4+MS3: {d['jobs']} jobs in {d['seconds']:.1f} s "
        f"({d['jobs_per_s']:.0f} jobs/s, peak {d['peak_rss_mib']:.0f} MiB)  target < 20 s"
    )
    print(
        f"(b) workflow S4: {w['jobs']} jobs in {w['seconds']:.1f} s ({w['jobs_per_s']:.0f} jobs/s, "
        f"{w['negative_clips_per_s']:.0f} negative clips/s)  target < 300 s"
    )
    if "loop" in figures:
        lp = figures["loop"]
        print(
            f"(c) plain loop: {lp['total_s']:.1f} s (plan {lp['plan_s']:.1f}, negatives "
            f"{lp['negatives_s']:.1f}, manifests+features {lp['features_s']:.1f}; "
            f"{lp['negative_clips_per_s']:.0f} negative clips/s)"
        )
        print(
            f"(b)/(c) = {figures['ratio_workflow_over_loop']:.2f}  target <= 2; "
            f"same bytes: {figures['loop_and_workflow_same_bytes']}"
        )
    name = "robust_pipeline" + ("_" + "_".join(a.strip("-") for a in extra) if extra else "")
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _sums(path: Path) -> list[tuple[str, str, str]]:
    import csv

    with open(path, newline="") as handle:
        return sorted(
            (r["negtype"], r["video"], r["sha256"]) for r in csv.DictReader(handle, delimiter="\t")
        )


if __name__ == "__main__":
    raise SystemExit(main())
