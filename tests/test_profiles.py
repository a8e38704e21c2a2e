"""The profiles in profiles/ work where they are meant to (no cluster needed here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")
SLURM_PROFILE = REPO / "profiles" / "slurm"

pytestmark = pytest.mark.workflow

TINY = {
    "datasets": ["s4"],
    "synthetic": {
        "image_size": 32,
        "s4_videos": {"train": 2, "val": 2, "test": 2},
        "ms3_videos": {"train": 0, "val": 0, "test": 0},
    },
}


def path_without_conda() -> str:
    return os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "conda").exists()
    )


def test_slurm_profile_deploys_with_conda():
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    assert profile["software-deployment-method"] == "conda"
    assert profile["executor"] == "slurm"


def test_slurm_profile_dry_run_works_without_conda(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": path_without_conda()}
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--profile",
            str(SLURM_PROFILE),
            "-n",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "conda not found: dry-run without creating or checking conda envs" in text
    assert "negative_audio" in proc.stdout and "train" in proc.stdout
    assert "Error running conda info" not in text
