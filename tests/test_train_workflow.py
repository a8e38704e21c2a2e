"""Training through Snakemake: SIGTERM to Snakemake stops and resumes it, a forced or
changed rerun of a finished run trains afresh (rules/training.smk, avsrobust.resume)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from test_workflow import SNAKEMAKE, TINY, snakemake

pytestmark = pytest.mark.workflow

CONFIG = {
    **TINY,
    "datasets": ["s4"],
    "negatives": ["silence"],
    "experiments": {"baseline": {}},
    "training": {**TINY["training"], "seeds": [0], "epochs": 2},
}
MODEL = Path("results/models/s4/baseline/seed0")
CKPT = Path("results/checkpoints/s4/baseline/seed0")
LOG = Path("logs/train/s4/baseline/seed0.log")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workdir with everything training needs built, training not run."""
    work = tmp_path_factory.mktemp("train_inputs")
    snakemake(work, CONFIG, str(MODEL / "final.pt"), "--omit-from", "train")
    assert not (work / MODEL).exists()
    return work


def copy_of(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest, symlinks=True)  # modification times kept: nothing reruns
    return dest


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_to_snakemake_stops_training_and_the_rerun_resumes_it(built, tmp_path):
    """Before: Snakemake waited for training to run to its last epoch, then reported "At
    least one job did not complete successfully" about a job that had."""
    config = {**CONFIG, "training": {**CONFIG["training"], "epochs": 60}}
    work = copy_of(built, tmp_path / "stopped")
    clean = copy_of(built, tmp_path / "clean")
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
        "--configfile", str(work / "config.yaml"), "--cores", "2", str(MODEL / "final.pt"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while "epoch 2/60" not in ((work / LOG).read_text() if (work / LOG).exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    log = (work / LOG).read_text()
    assert proc.returncode != 0
    assert "SIGTERM: stopping the 1 running job(s) too" in out, out[-3000:]
    assert "At least one job did not complete successfully" in out
    assert "preempted after" in log and "epoch 60/60" not in log, log[-2000:]
    done = torch.load(work / CKPT / "last.pt", weights_only=True)["epoch"]
    assert 2 <= done < 60 and not (work / MODEL / "final.pt").exists()

    snakemake(work, config, str(MODEL / "final.pt"))
    log = (work / LOG).read_text()
    assert f"resuming from {CKPT / 'last.pt'}: {done} epoch(s) done" in log
    snakemake(clean, config, str(MODEL / "final.pt"))
    for name in ("final.pt", "best.pt"):
        assert same_weights(work / MODEL / name, clean / MODEL / name), name
    assert not (work / CKPT).exists()


def test_a_forced_or_changed_rerun_of_a_finished_run_trains_afresh(built, tmp_path):
    """Before: `--forcerun train` resumed the finished run's epochs and failed with a
    MissingOutputException for best.pt; a changed lr failed on the foreign checkpoint."""
    work = copy_of(built, tmp_path / "work")
    target = str(MODEL / "final.pt")
    snakemake(work, CONFIG, target)
    first = weights(work / MODEL / "final.pt")
    snakemake(work, CONFIG, target, "--forcerun", "train")
    log = (work / LOG).read_text()
    assert "resuming" not in log and "epoch 2/2" in log
    assert (work / MODEL / "best.pt").is_file()
    again = weights(work / MODEL / "final.pt")
    assert all(torch.equal(first[k], again[k]) for k in first)  # same config, same weights

    changed = {**CONFIG, "training": {**CONFIG["training"], "lr": 0.01}}
    proc = snakemake(work, changed, target)
    assert "Params have changed since last execution" in proc.stdout + proc.stderr
    log = (work / LOG).read_text()
    assert "resuming" not in log and "epoch 2/2" in log
    assert torch.load(work / MODEL / "best.pt", weights_only=True)["cfg"]["lr"] == 0.01
