"""Outputs (avsrobust.atomic): the user's umask, no stale temporaries, and a full disk that
says so (tested on a real, tiny tmpfs) instead of SIGBUS."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, tone

from avsrobust import atomic
from avsrobust.errors import DiskFull
from avsrobust.joblog import run_script
from avsrobust.wav import AudioFormat, write_wav


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_outputs_follow_the_umask(tmp_path, umask_027):
    """mkstemp's 0o600 survived the rename: a team could not read a shared benchmark."""
    text, data = tmp_path / "a.tsv", tmp_path / "b.bin"
    atomic.atomic_write_text(text, "x\n")
    atomic.atomic_write_bytes(data, b"x")
    with atomic.atomic_path(tmp_path / "c.npy") as tmp:
        arr = atomic.npy_memmap(tmp, np.uint8, (2, 3))
        arr[:] = 7
        del arr
    write_wav(tmp_path / "d.wav", tone(AudioFormat()), AudioFormat())
    for path in (text, data, tmp_path / "c.npy", tmp_path / "d.wav"):
        assert mode(path) == umask_027, path
    assert np.array_equal(np.load(tmp_path / "c.npy"), np.full((2, 3), 7, np.uint8))


@pytest.mark.workflow
def test_every_output_of_a_workflow_run_follows_the_umask(tmp_path):
    from test_workflow import TINY, snakemake

    old = os.umask(0o002)  # a team's shared benchmark: group-writable
    try:
        snakemake(
            tmp_path,
            {**TINY, "datasets": ["ms3"]},
            "results/robust/ms3/val.manifest.tsv",
            "results/features/ms3/val/noise.npy",
            "results/frame_cache/ms3/val/index.tsv",
            "results/inputs/ms3/val.check.tsv",
        )
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert len(files) > 20
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o664} == {}


def test_stale_temporaries_of_an_output_are_removed_before_it_is_written(tmp_path):
    out = tmp_path / "positive.npy"
    stale = [tmp_path / ".positive.npy.k3j_9x0a.tmp", tmp_path / ".positive.npy.zzzzzzzz.tmp"]
    others = [
        tmp_path / ".positive.index.tsv.k3j_9x0a.tmp",  # another output's temporary
        tmp_path / ".positive.npy.notmine.tmp",  # not a name atomic_path makes
        tmp_path / "positive.npy.bak",
    ]
    for path in stale + others:
        path.write_bytes(b"left by a killed job")
    atomic.atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new"
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in others)
    assert atomic.output_of(stale[0]) == out and atomic.output_of(others[1]) is None


def test_a_full_disk_in_a_script_job_is_one_line(tmp_path, capsys):
    def main(logger):
        raise DiskFull(tmp_path / "out.npy", 28)

    with pytest.raises(SystemExit) as err:
        run_script(main, tmp_path / "job.log")
    assert err.value.code == 1
    line = f"No space left on device: {tmp_path / 'out.npy'}"
    assert capsys.readouterr().err == f"ERROR: {line}\n"
    assert line in (tmp_path / "job.log").read_text()


# ----------------------------------------------------------------------------- a real full disk
def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs none /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace (unshare)"
)

WRITERS = {
    # name: (tmpfs KiB, code run with `disk` (the tmpfs), `src` (inputs) and `report`)
    "features": (
        64,
        """
        from avsrobust.features import extract_features
        wavs = sorted(src.glob("*.wav"))
        report(lambda: extract_features(wavs, disk / "feat" / "positive.npy", device="cpu"))
        """,
    ),
    "frame_cache": (
        16,
        """
        from avsrobust.frame_cache import build_cache
        from avsrobust.metadata import read_clips
        clips = read_clips(src / "avsbench", "s4")
        report(lambda: build_cache(src / "avsbench", clips, disk / "cache", 32))
        """,
    ),
    "predictions": (
        32,
        """
        from avsrobust.predictions import PredictionWriter
        def write():
            with PredictionWriter(disk / "pred" / "seed0.npy", 4, 64) as w:
                w.write(0, np.full((4, 5, 64, 64), 9, np.uint8))
        report(write)
        """,
    ),
    "plain": (
        16,
        """
        from avsrobust.atomic import atomic_write_bytes
        report(lambda: atomic_write_bytes(disk / "big.bin", bytes(100_000)))
        """,
    ),
}

PRELUDE = """
import json, sys
from pathlib import Path
import numpy as np
disk, src = Path(sys.argv[1]), Path(sys.argv[2])
def report(write):
    try:
        write()
        message = None
    except OSError as exc:
        message = f"{type(exc).__name__}: {exc}"
    left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())
    print(json.dumps({"message": message, "left": left}))
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from avsrobust.synthetic import SyntheticConfig, generate

    src = tmp_path_factory.mktemp("full_disk_src")
    for i in range(3):
        write_wav(src / f"clip{i}.wav", tone(AudioFormat(), 300 + 100 * i), AudioFormat())
    generate(
        src / "avsbench", SyntheticConfig(seed=1, s4_videos={"test": 2}, image_size=32), ("s4",)
    )
    return src


@needs_tmpfs
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_names_the_output_and_leaves_nothing(writer, sources, tmp_path):
    """On a tmpfs too small for the output: before, memory-mapped writes died of SIGBUS
    (exit -7) and left their .tmp; now a DiskFull naming the output, and nothing left."""
    kib, body = WRITERS[writer]
    disk = tmp_path / "disk"
    disk.mkdir()
    code = PRELUDE + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    proc = subprocess.run(
        [
            "unshare", "--mount", "--map-root-user", "sh", "-c",
            f'mount -t tmpfs -o size={kib}k none "$1" && exec "$0" -c "$3" "$1" "$2"',
            sys.executable, str(disk), str(sources), code,
        ],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    result = json.loads(proc.stdout.splitlines()[-1])
    output = {
        "features": disk / "feat" / "positive.npy",
        "frame_cache": disk / "cache" / "frames.npy",
        "predictions": disk / "pred" / "seed0.npy",
        "plain": disk / "big.bin",
    }[writer]
    assert result["message"] == f"DiskFull: No space left on device: {output}", result
    assert result["left"] == [], result  # no output, no temporary
