"""The workflow on a real one-node SLURM cluster (tests/slurm/slurm_local.sh start).

Checked from SLURM's own records (scontrol, jobcomp) rather than from what
Snakemake says it did: GPU rules asked for a GPU, CPU rules did not, and the
per-clip jobs never went to SLURM: they ran inside the main Snakemake process
on the submit host, one submission per heavy job.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from test_workflow import job_counts, sha_tree

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")
CLUSTER = REPO / "tests" / "slurm" / "slurm_local.sh"

pytestmark = pytest.mark.slurm

SLURM_TINY = {
    "seed": 5,
    "datasets": ["s4"],
    "features": {"gpus": 1},
    "training": {"epochs": 1, "image_size": 32, "batch_size": 2, "seeds": [0]},
    "synthetic": {
        "image_size": 32,
        "s4_videos": {"train": 2, "val": 2, "test": 2},
        "ms3_videos": {"train": 0, "val": 0, "test": 0},
    },
}
VIDEOS = 6
#: the audio types the run generates: config/config.yaml's (SLURM_TINY keeps them)
NEGATIVES = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["negatives"]
#: rules that run inside the main Snakemake process (localrules), never on SLURM
LOCAL_RULES = {"all", "offscreen_plan", "negative_audio", "offscreen_audio", "mixture_audio"}
#: rules that ask for a GPU: features (features.gpus; one job per split and condition), train
#: and evaluate (default 1 each; one evaluate job, one allocation, per (dataset, experiment)
#: scores every audio condition)
GPU_RULES = {"audio_features": 3 * (1 + len(NEGATIVES)), "train": 2, "evaluate": 2}


@pytest.fixture(scope="module")
def cluster():
    """The cluster `make test` started; a skip without it, a failure where CI requires it."""
    missing = None
    if shutil.which("sbatch") is None:
        missing = "SLURM is not installed (tests/slurm/slurm_local.sh start)"
    elif subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode:
        missing = "no local SLURM cluster running (tests/slurm/slurm_local.sh start)"
    if missing and os.environ.get("AVSROBUST_REQUIRE_SLURM") == "1":
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def run(workdir: Path, config: dict, *args: str, snakefile: Path = REPO / "Snakefile"):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        "900",
        SNAKEMAKE,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        *args,  # before --configfile and --sdm, which take every word after them
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        # No conda on the test machine: the jobs run in the test venv.
        "--sdm",
        "env-modules",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=960)


def submitted(output: str) -> dict[int, str]:
    """SLURM job id -> Snakemake log path, from 'submitted with SLURM jobid' lines."""
    return {
        int(m[1]): m[2]
        for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", output)
    }


def scontrol(jobid: int) -> str:
    proc = subprocess.run(
        ["scontrol", "-d", "show", "job", str(jobid)], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"SLURM has no record of job {jobid}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    proc = run(work, SLURM_TINY)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    return work, text


def test_slurm_run_gives_the_same_audio_as_a_local_run(slurm_run, tmp_path):
    work, _ = slurm_run
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.yaml").write_text(yaml.safe_dump(SLURM_TINY))
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(local),
            "--configfile",
            str(local / "config.yaml"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sha_tree(work / "results/robust") == sha_tree(local / "results/robust")
    # one clip per video and configured type (silence, noise, offscreen, mixture)
    wavs = list((work / "results/robust").rglob("*.wav"))
    assert len(wavs) == len(NEGATIVES) * VIDEOS
    assert {w.relative_to(work / "results/robust").parts[2] for w in wavs} == {
        f"audio_wav_{t}" for t in NEGATIVES
    }
    assert (work / "results/summary/summary.tsv").read_text() == (
        local / "results/summary/summary.tsv"
    ).read_text()  # trained and scored on SLURM (on CPU): same numbers as locally
    for split in ("train", "val", "test"):
        assert (work / f"results/features/s4/{split}/offscreen.npy").read_bytes() == (
            local / f"results/features/s4/{split}/offscreen.npy"
        ).read_bytes()


def test_gpu_rules_asked_slurm_for_a_gpu_and_cpu_rules_did_not(slurm_run):
    _, text = slurm_run
    jobs = submitted(text)
    for rule, count in GPU_RULES.items():
        gpu_jobs = [j for j, log in jobs.items() if f"/rule_{rule}/" in log]
        assert len(gpu_jobs) == count, (rule, jobs)
        for jobid in gpu_jobs:
            record = scontrol(jobid)
            assert "TresPerJob=gres:gpu:1" in record, record
            assert "JobState=COMPLETED" in record
    others = {j: log for j, log in jobs.items() if not any(f"/rule_{r}/" in log for r in GPU_RULES)}
    assert any("/rule_frame_cache/" in log for log in others.values())
    assert any("/rule_summary/" in log for log in others.values())
    for jobid in others:
        record = scontrol(jobid)
        assert "TresPerJob" not in record and "TresPerNode" not in record, record
        assert "JOB_GRES=(null)" in record


def slurm_records(workdir: Path) -> list[str]:
    """SLURM's completion records (jobcomp) of the jobs that ran in ``workdir``."""
    env = subprocess.run(["bash", str(CLUSTER), "env"], capture_output=True, text=True).stdout
    jobcomp = re.search(r"SLURM_LOCAL_JOBCOMP=(\S+)", env)[1]
    lines = Path(jobcomp).read_text().splitlines()
    return [line for line in lines if f"WorkDir={workdir} " in line]


@pytest.fixture(scope="module")
def audio_run(cluster, tmp_path_factory):
    """Only the negative audio (every split's manifest): the benchmark's (d) at tiny scale."""
    work = tmp_path_factory.mktemp("slurm_audio")
    targets = [f"results/robust/s4/{split}.manifest.tsv" for split in ("train", "val", "test")]
    proc = run(work, SLURM_TINY, *targets)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    return work, text


def test_per_clip_jobs_ran_in_the_main_snakemake_process_not_on_slurm(audio_run):
    work, text = audio_run
    jobs = submitted(text)
    assert not any(
        f"/rule_{r}/" in log or "/group_" in log for r in LOCAL_RULES for log in jobs.values()
    )
    # Every per-clip job logged where it ran: one process, on this host, outside SLURM.
    logs = sorted((work / "logs/robust").rglob("audio_wav_*/**/*.log"))
    assert len(logs) == 4 * VIDEOS
    where = {tuple(f.read_text().rstrip("\n").split("\t")[-3:]) for f in logs}
    assert len(where) == 1, where
    host, _pid, slurm_job = next(iter(where))
    assert host == f"host={socket.gethostname()}" and slurm_job == "slurm_job="
    # One submission per job of the other rules, and SLURM saw exactly those.
    counts = job_counts(text[text.index("Job stats:") :].split("\n\n")[0])
    heavy = sum(n for rule, n in counts.items() if rule not in LOCAL_RULES | {"total"})
    assert counts["negative_audio"] == 2 * VIDEOS and counts["offscreen_audio"] == VIDEOS
    assert counts["mixture_audio"] == VIDEOS
    assert len(jobs) == heavy == 1 + 3  # the synthetic tree and the three manifests
    records = slurm_records(work)
    assert len(records) == heavy
    assert all("JobState=COMPLETED" in r for r in records)


def test_dry_run_with_the_slurm_profile(cluster, tmp_path):
    proc = run(tmp_path, SLURM_TINY, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "audio_features" in proc.stdout
    assert not submitted(proc.stdout + proc.stderr)


def test_failed_job_is_retried_with_more_memory_and_runtime(cluster, tmp_path):
    proc = run(tmp_path, {}, snakefile=REPO / "tests/slurm/retry/Snakefile")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "Trying to restart job" in text or "restart" in text.lower()
    # Snakemake clears a failed attempt's log; the successful one saw doubled resources
    assert (tmp_path / "flaky.log").read_text().splitlines() == ["attempt 2 mem_mb=4000 runtime=40"]
    jobs = sorted(submitted(text))
    assert len(jobs) == 2
    first, second = (scontrol(j) for j in jobs)
    assert "JobState=FAILED" in first and "JobState=COMPLETED" in second
    assert "MinMemoryNode=2000M" in first and "MinMemoryNode=4000M" in second
    assert "TimeLimit=00:20:00" in first and "TimeLimit=00:40:00" in second
