"""The README's recovery commands, run exactly as the README writes them (only the
Snakefile, folder and config file are added): rebuilding the missing files of a split,
recovering after kill -9, and what a second run in the same folder is told."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from test_train_workflow import CKPT, CONFIG, LOG, MODEL, built, copy_of, same_weights  # noqa: F401
from test_workflow import SNAKEMAKE, TINY, sha_tree

pytestmark = pytest.mark.workflow


def readme_command(contains: str) -> list[str]:
    """The one `snakemake ...` line of the README's bash blocks containing ``contains``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.splitlines() if contains in line]
    assert len(lines) == 1, (contains, lines)
    argv = shlex.split(lines[0], comments=True)
    assert argv[0] == "snakemake", lines[0]
    return argv[1:]


def readme_after_comment(comment: str) -> list[str]:
    """The command on the line after the README comment ``# {comment}``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^# {re.escape(comment)}\n(snakemake .*)$", text, re.M)
    assert match, comment
    return shlex.split(match.group(1), comments=True)[1:]


def command(work: Path, args: list[str]) -> list[str]:
    return [
        SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
        "--configfile", str(work / "config.yaml"), *args,
    ]  # fmt: skip


def run(work: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command(work, args), capture_output=True, text=True, timeout=900)


def text(proc) -> str:
    return proc.stdout + proc.stderr


def test_rebuilding_what_is_missing_of_a_split_as_the_readme_says(tmp_path):
    """The README's command asked for the manifest alone: with the manifest still there
    and newer, Snakemake did nothing after clips were deleted."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump({**TINY, "datasets": ["s4"]}))
    assert run(work, ["--cores", "2", "results/robust/s4/test.manifest.tsv"]).returncode == 0
    robust = work / "results/robust"
    before = sha_tree(robust)
    wavs = sorted((robust / "Single-source/s4_data").rglob("audio_wav_*/test/*/*.wav"))
    gone, kept = wavs[::3], [w for w in wavs if w not in wavs[::3]]
    kept_mtimes = {w: w.stat().st_mtime_ns for w in kept}
    for wav in gone:
        wav.unlink()
    # asking for the manifest alone rebuilds nothing: why the README forces the manifest job
    plain = run(work, ["--cores", "all", "results/robust/s4/test.manifest.tsv"])
    assert "Nothing to be done" in text(plain) and not any(w.exists() for w in gone)

    comment = "rebuild what is missing of S4 test (e.g. after deleting some of its files)"
    proc = run(work, readme_after_comment(comment))
    assert proc.returncode == 0, text(proc)[-3000:]
    assert sha_tree(robust) == before
    assert {w: w.stat().st_mtime_ns for w in kept} == kept_mtimes  # nothing else rebuilt


def wait_for(predicate, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kill_9_recovery_and_a_second_run_as_the_readme_says(built, tmp_path):  # noqa: F811
    config = {**CONFIG, "training": {**CONFIG["training"], "epochs": 60}}
    work = copy_of(built, tmp_path / "killed")
    clean = copy_of(built, tmp_path / "clean")
    for folder in (work, clean):
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    first = subprocess.Popen(
        command(work, ["--cores", "all"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        log = work / LOG
        wait_for(lambda: log.exists() and "epoch 2/60" in log.read_text(), first)
        # a second run while the first one works: told so, then Snakemake's messages
        second = run(work, ["--cores", "all"])
        assert second.returncode != 0
        out = text(second)
        assert f"another Snakemake run (pid {first.pid}, started " in out, out[-3000:]
        assert "seem to be incomplete" in out or "Directory cannot be locked" in out
        dry = run(work, ["-n", "results/robust/s4/test.manifest.tsv"])  # no overlap: fine
        assert dry.returncode == 0, text(dry)[-3000:]
        assert "another Snakemake run" in text(dry)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a power loss: Snakemake and every job
        first.wait()

    again = run(work, ["--cores", "all"])
    assert again.returncode != 0 and "another Snakemake run" not in text(again)
    assert "IncompleteFilesException" in text(again) and "--rerun-incomplete" in text(again)
    locked = run(work, ["--cores", "all", "--rerun-incomplete"])
    assert "Directory cannot be locked" in text(locked) and "--unlock" in text(locked)
    done = torch.load(work / CKPT / "last.pt", weights_only=True)["epoch"]

    for args in (readme_command("--unlock"), readme_command("--rerun-incomplete")):
        proc = run(work, args)
        assert proc.returncode == 0, (args, text(proc)[-3000:])
    assert f"resuming from {CKPT / 'last.pt'}: {done} epoch(s) done" in (work / LOG).read_text()
    assert (work / "results/summary/summary.tsv").is_file()
    assert not (work / ".snakemake/avsrobust_active_run.json").exists()
    assert run(clean, ["--cores", "2", str(MODEL / "final.pt")]).returncode == 0
    for name in ("final.pt", "best.pt"):
        assert same_weights(work / MODEL / name, clean / MODEL / name), name
