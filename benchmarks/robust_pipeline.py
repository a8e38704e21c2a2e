"""Benchmark: negative audio + features at AVSBench scale; workflow vs. plain loop, local vs SLURM.

    .venv/bin/python benchmarks/robust_pipeline.py            # (a)-(c), full S4 scale (~5 min)
    .venv/bin/python benchmarks/robust_pipeline.py --scale 0.1
    .venv/bin/python benchmarks/robust_pipeline.py --steps d  # (d), needs the local SLURM cluster

Builds a full-size synthetic AVSBench tree (S4 3452/740/740 videos, MS3 296/64/64, audio
plus empty placeholder frames and masks) whose AVSS/metadata.csv has the real file's shape
(columns vid, uid, s_min, s_sec, a_obj, split, label; 4,932 v1s, 424 v1m and 6,000 v2
rows, v2 objects outside the MS3 vocabulary, v2 videos with several rows), then measures
  (a) `snakemake -n` of the full S4+MS3 DAG, everything to the summary, job listing printed,
  (b) negatives (3 types) + features for S4 through the workflow (local profile),
  (c) the same work as one plain single-process loop over the same library calls,
  (d) S4+MS3 negative audio (3 types, every split's manifest) through
      `--profile profiles/slurm` on the local one-node cluster (tests/slurm/slurm_local.sh)
      and through a local run: wall, CPU seconds, SLURM submissions, identical manifests,
and prints jobs/s, clips/s and the ratios. Targets: (a) <= 20 s, (b) < 300 s,
(b)/(c) <= 1.5, (d) SLURM wall <= 2x local wall with <= 50 submissions, same bytes.
Figures also go to benchmarks/out/robust_pipeline.json (one file per --steps/--scale).
Earlier runs' folders are moved aside and deleted after the measurements, and the file
system's time to create a file is printed with the figures (see Trash).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

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
CLUSTER = REPO / "tests" / "slurm" / "slurm_local.sh"
AVSS_COLUMNS = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")
#: AVSS-semantic (v2) objects, most of them outside the MS3 vocabulary
V2_OBJECTS = (
    "girl", "boy", "accordion", "clock", "tiger", "guitar", "man", "woman", "piano", "dog",
    "violin", "lion", "cello", "truck", "baby", "flute", "drum", "bird", "car", "cat",
)  # fmt: skip
V2_ROWS = 6000
V2_MULTI_ROW_VIDEOS = 1128


def scaled(sizes: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(4, round(v * scale)) for k, v in sizes.items()}


def build_tree(root: Path, cfg: SyntheticConfig) -> float:
    stamp = root / ".bench-config.json"
    wanted = json.dumps(
        [cfg.s4_videos, cfg.ms3_videos, cfg.seed, cfg.image_size, V2_ROWS, "placeholder images"]
    )
    if stamp.is_file() and stamp.read_text() == wanted:
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    generate(root, cfg, progress=sys.stderr.isatty(), workers=os.cpu_count() or 1, audio_only=True)
    write_real_format_avss(root / layout.AVSS_META)
    write_placeholder_images(root)
    stamp.write_text(wanted)
    return time.perf_counter() - t0


def write_placeholder_images(root: Path) -> int:
    """An empty file at every frame and mask path (39,752 at full size).

    The input checks and frame caches declare every PNG they read, so the full DAG
    (step a) needs them to exist; no step of this benchmark decodes them.
    """
    n = 0
    for dataset in layout.DATASETS:
        for clip in read_clips(root, dataset, root / layout.AVSS_META):
            for png in layout.clip_images(root, clip):
                png.parent.mkdir(parents=True, exist_ok=True)
                png.touch()
                n += 1
    return n


def write_real_format_avss(path: Path, seed: int = 0) -> None:
    """Rewrite the tree's AVSS/metadata.csv in the real file's shape (see the docstring).

    The generator's v1s (S4) and v1m (MS3) rows are kept; start times are added and
    6,000 v2 rows follow, as AVSBench-semantic ships them. One v1s object gets the
    real file's typo (``h orse``): only v1m rows are read, so none of this may matter.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] in ("v1s", "v1m")]
    rng = np.random.default_rng(seed)
    out = []
    for i, r in enumerate(rows):
        a_obj = "h orse" if i == 0 and r["label"] == "v1s" else r["a_obj"]
        s_min, s_sec = int(rng.integers(0, 10)), int(rng.integers(0, 60))
        out.append([r["vid"], r["uid"], s_min, s_sec, a_obj, r["split"], r["label"]])
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))
    n_videos = V2_ROWS - V2_MULTI_ROW_VIDEOS
    vids = ["".join(rng.choice(alphabet, 11)) for _ in range(n_videos)]
    for i, vid in enumerate(vids):
        n = 2 if i < V2_MULTI_ROW_VIDEOS else 1
        split = str(rng.choice(["train", "val", "test"], p=[0.7, 0.15, 0.15]))
        for k in range(n):
            objects = rng.choice(V2_OBJECTS, int(rng.integers(1, 3)), replace=False)
            out.append(
                [vid, f"{vid}_{k}", int(rng.integers(0, 10)), int(rng.integers(0, 60)),
                 "_".join(objects), split, "v2"]
            )  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(AVSS_COLUMNS)
        writer.writerows(out)


def write_config(path: Path, root: Path, datasets: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        # the paper's three negative types, as the README's figures were measured (the
        # mixture, a default since, adds one more in-process job per clip)
        json.dumps(
            {"avsbench_root": str(root), "datasets": datasets, "seed": 0, "negatives": NEGATIVES}
        )
        + "\n"
    )
    return path


def run_snakemake(
    workdir: Path, configfile: Path, *extra: str, profile: Path | None = None
) -> dict:
    """Run snakemake from the repo's Snakefile in ``workdir`` (the local profile, plus
    ``profile`` if given); wall and CPU seconds (the process and its children), output,
    peak RSS."""
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
        *(["--profile", str(profile)] if profile else []),
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({' '.join(cmd)}):\n{out[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "output": out,
        "peak_kib": max(after.ru_maxrss, before.ru_maxrss),
    }


class ForeignCpu(threading.Thread):
    """CPU seconds of processes working in ``workdir`` that the benchmark did not start
    (the SLURM jobs, started by slurmd): sampled from /proc every ``interval`` s."""

    def __init__(self, workdir: Path, interval: float = 0.1):
        super().__init__(daemon=True)
        self.workdir = str(workdir)
        self.interval = interval
        self.ticks: dict[tuple[int, str], int] = {}
        self.done = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        ours = {os.getpid()}
        stats = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), fields[19], int(fields[11]) + int(fields[12]), cwd)
        # descendants of this benchmark (snakemake and its local jobs) are measured by rusage
        changed = True
        while changed:
            changed = False
            for pid, (ppid, *_rest) in stats.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        for pid, (_ppid, start, ticks, cwd) in stats.items():
            if pid not in ours and (cwd == self.workdir or cwd.startswith(self.workdir + "/")):
                self.ticks[(pid, start)] = ticks

    def stop(self) -> float:
        self.done.set()
        self.join()
        return sum(self.ticks.values()) / self.tick


class Trash:
    """Earlier runs' folders, moved aside now and deleted after the measurements.

    Deleting tens of thousands of files just before a measured run slows that run's own
    file creations: ext4 without a journal (this machine's root file system) passes over
    the inodes freed in the last minute or more when it allocates one, and on 2026-12-03
    a new file took 260-550 us right after such a deletion against ~25 us on a quiet file
    system (:func:`creation_us`). The workflow creates four files a clip (the WAV, its log,
    Snakemake's metadata record and incomplete marker), the loop one.
    """

    def __init__(self, out: Path):
        self.dir = out / ".trash"

    def clear(self, path: Path) -> None:
        if path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.rename(self.dir / f"{path.name}.{time.time_ns()}")

    def empty(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def creation_us(out: Path, trash: Trash, files: int = 1000) -> float:
    """Microseconds to create one empty file in a new folder under ``out`` (the file
    system's state of the moment: see :class:`Trash`)."""
    probe = out / "creation_probe"
    trash.clear(probe)
    probe.mkdir(parents=True)
    t0 = time.perf_counter()
    for i in range(files):
        os.close(os.open(probe / f"{i}.wav", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    seconds = time.perf_counter() - t0
    trash.clear(probe)
    return seconds / files * 1e6


def cluster_env() -> dict[str, str]:
    """The local cluster's facts (slurm_local.sh env); exits if it is not running."""
    if subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode:
        sys.exit(f"(d) needs the local SLURM cluster: {CLUSTER} start")
    text = subprocess.run(["bash", str(CLUSTER), "env"], capture_output=True, text=True).stdout
    return dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))


def slurm_records(jobcomp: Path, workdir: Path) -> list[str]:
    """SLURM's own completion records of the jobs that ran in ``workdir``."""
    return [line for line in jobcomp.read_text().splitlines() if f"WorkDir={workdir} " in line]


def manifests_sha(work: Path, datasets: dict[str, list[str]]) -> dict[str, str]:
    import hashlib

    return {
        f"{ds}/{sp}": hashlib.sha256(
            (work / f"results/robust/{ds}/{sp}.manifest.tsv").read_bytes()
        ).hexdigest()
        for ds, splits in datasets.items()
        for sp in splits
    }


def slurm_vs_local(out: Path, root: Path, cfg: SyntheticConfig, trash: Trash) -> dict:
    """(d): S4+MS3 negative audio through profiles/slurm on the local cluster and locally."""
    env = cluster_env()
    jobcomp = Path(env["SLURM_LOCAL_JOBCOMP"])
    splits = {"s4": list(cfg.s4_videos), "ms3": list(cfg.ms3_videos)}
    config = write_config(out / "config_d.json", root, list(splits))
    targets = [f"results/robust/{ds}/{sp}.manifest.tsv" for ds, sps in splits.items() for sp in sps]
    runs = {}
    for name in ("local", "slurm"):
        work = out / f"work_d_{name}"
        trash.clear(work)
        work.mkdir(parents=True)
        load = os.getloadavg()[0]
        if name == "local":
            res = run_snakemake(work, config, *targets, "--cores", "2", "--quiet", "rules")
            foreign = 0.0
        else:
            sampler = ForeignCpu(work)
            sampler.start()
            # No conda here: the SLURM jobs run in this venv (envs/*.yaml on a real cluster).
            res = run_snakemake(
                work, config, *targets, "--sdm", "env-modules", profile=REPO / "profiles" / "slurm"
            )
            foreign = sampler.stop()
        records = slurm_records(jobcomp, work) if name == "slurm" else []
        logs = list((work / "logs/robust").rglob("audio_wav_*/**/*.log"))
        where = {tuple(p.read_text().rstrip("\n").split("\t")[-2:]) for p in logs}
        runs[name] = {
            "seconds": res["seconds"],
            "cpu_s": res["cpu_s"] + foreign,
            "cpu_s_slurm_jobs": foreign,
            "jobs": job_count(res["output"]),
            "clips": len(logs),
            "slurm_submissions": len(records),
            "slurm_rules": sorted(set(re.findall(r"slurm_logs/rule_(\w+)/", res["output"]))),
            "per_clip_jobs_ran_in": sorted("/".join(w) for w in where),
            "load_before": load,
            "manifests": manifests_sha(work, splits),
        }
    runs["same_bytes"] = runs["local"]["manifests"] == runs["slurm"]["manifests"]
    runs["wall_ratio_slurm_over_local"] = runs["slurm"]["seconds"] / runs["local"]["seconds"]
    return runs


def run_figures(res: dict, load: float) -> dict:
    """The figures of one snakemake run (see run_snakemake), with the load before it."""
    jobs = job_count(res["output"])
    return {
        "seconds": res["seconds"],
        "cpu_s": res["cpu_s"],
        "jobs": jobs,
        "jobs_per_s": jobs / res["seconds"],
        "peak_rss_mib": res["peak_kib"] / 1024,
        "load_before": load,
    }


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
    ap.add_argument("--steps", default="a,b,c", help="which of a,b,c,d to run (d: SLURM)")
    ap.add_argument(
        "--snakemake-args", default="", help="extra flags for (b), e.g. '--drop-metadata'"
    )
    args = ap.parse_args(argv)
    steps = set(args.steps.split(","))

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
    figures: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "s4_videos": n_s4,
        "ms3_videos": sum(cfg.ms3_videos.values()),
        "snakemake_args": args.snakemake_args.split(),
    }
    trash = Trash(out)
    figures["file_creation_us"] = creation_us(out, trash)
    print(f"file creation here: {figures['file_creation_us']:.0f} us a file (see Trash)")

    if "a" in steps:  # dry-run of the full S4 + MS3 DAG, job listing printed
        cfg_a = write_config(out / "work_a" / "config.json", root, ["s4", "ms3"])
        trash.clear(out / "work_a" / ".snakemake")
        load = os.getloadavg()[0]
        dry = run_snakemake(out / "work_a", cfg_a, "-n")
        figures["dry_run"] = {
            **run_figures(dry, load),
            "listing_lines": dry["output"].count("\n"),
        }
        d = figures["dry_run"]
        print(
            f"(a) dry-run S4+MS3 with job listing: {d['jobs']} jobs in {d['seconds']:.1f} s "
            f"(CPU {d['cpu_s']:.1f} s, peak {d['peak_rss_mib']:.0f} MiB, load {load:.1f})  "
            "target <= 20 s"
        )

    if "b" in steps:  # the workflow, S4 negatives + features
        work_b = out / "work_b"
        trash.clear(work_b)
        cfg_b = write_config(out / "config_b.json", root, ["s4"])
        extra = args.snakemake_args.split()
        # The tree's frames are empty placeholders: the input checks are not asked for.
        targets = [f"results/robust/s4/{split}.manifest.tsv" for split in cfg.s4_videos] + [
            f"results/features/s4/{split}/{c}.npy"
            for split in cfg.s4_videos
            for c in ("positive", *NEGATIVES)
        ]
        load = os.getloadavg()[0]
        wf = run_snakemake(work_b, cfg_b, *targets, "--cores", "2", *extra, "--quiet", "rules")
        figures["workflow"] = {
            **run_figures(wf, load),
            "negative_clips_per_s": 3 * n_s4 / wf["seconds"],
        }
        w = figures["workflow"]
        print(
            f"(b) workflow S4: {w['jobs']} jobs in {w['seconds']:.1f} s (CPU {w['cpu_s']:.1f} s, "
            f"{w['jobs_per_s']:.0f} jobs/s, {w['negative_clips_per_s']:.0f} negative clips/s, "
            f"load {load:.1f})  target < 300 s"
        )

    if "c" in steps:  # the same work as one plain loop
        loop_dir = out / "loop_c"
        trash.clear(loop_dir)
        load = os.getloadavg()[0]
        cpu0 = time.process_time()
        loop = plain_loop(root, loop_dir, args.batch_size)
        loop["cpu_s"] = time.process_time() - cpu0
        figures["loop"] = {
            **loop,
            "negative_clips_per_s": 3 * n_s4 / loop["total_s"],
            "load_before": load,
        }
        lp = figures["loop"]
        print(
            f"(c) plain loop: {lp['total_s']:.1f} s (CPU {lp['cpu_s']:.1f} s; plan "
            f"{lp['plan_s']:.1f}, negatives {lp['negatives_s']:.1f}, manifests+features "
            f"{lp['features_s']:.1f}; {lp['negative_clips_per_s']:.0f} negative clips/s, "
            f"load {load:.1f})"
        )
        if "workflow" in figures:
            work_b = out / "work_b"
            figures["ratio_workflow_over_loop"] = figures["workflow"]["seconds"] / lp["total_s"]
            figures["ratio_cpu_workflow_over_loop"] = figures["workflow"]["cpu_s"] / lp["cpu_s"]
            loop_sums = {
                s: _sums(loop_dir / "robust/s4" / f"{s}.manifest.tsv") for s in cfg.s4_videos
            }
            figures["loop_and_workflow_same_bytes"] = all(
                loop_sums[s]
                and loop_sums[s] == _sums(work_b / "results/robust/s4" / f"{s}.manifest.tsv")
                for s in cfg.s4_videos
            )
            print(
                f"(b)/(c) = {figures['ratio_workflow_over_loop']:.2f} wall, "
                f"{figures['ratio_cpu_workflow_over_loop']:.2f} CPU  target <= 1.5; "
                f"same bytes: {figures['loop_and_workflow_same_bytes']}"
            )

    if "d" in steps:
        d = figures["slurm_vs_local"] = slurm_vs_local(out, root, cfg, trash)
        for name in ("local", "slurm"):
            r = d[name]
            print(
                f"(d) {name:5s} S4+MS3 negative audio: {r['jobs']} jobs, {r['clips']} clips in "
                f"{r['seconds']:.1f} s wall, {r['cpu_s']:.1f} CPU s "
                f"({r['cpu_s_slurm_jobs']:.1f} in SLURM jobs), {r['slurm_submissions']} SLURM "
                f"submissions {r['slurm_rules']}, per-clip jobs ran in "
                f"{r['per_clip_jobs_ran_in']}, load {r['load_before']:.1f}"
            )
        print(
            f"(d) SLURM/local wall = {d['wall_ratio_slurm_over_local']:.2f}  target <= 2 with "
            f"<= 50 submissions; manifests byte-identical: {d['same_bytes']}"
        )

    name = "robust_pipeline" + "".join(f"_{s}" for s in sorted(steps))
    name += f"_scale{args.scale:g}" if args.scale != 1 else ""
    name += "".join("_" + a.strip("-") for a in figures["snakemake_args"])
    args.out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    trash.empty()  # after the measurements: see Trash
    return 0


def _sums(path: Path) -> list[tuple[str, str, str]]:
    import csv

    with open(path, newline="") as handle:
        return sorted(
            (r["negtype"], r["video"], r["sha256"]) for r in csv.DictReader(handle, delimiter="\t")
        )


if __name__ == "__main__":
    raise SystemExit(main())
