"""Checking an AVSBench copy: every WAV, frame and mask, named when broken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from avsrobust import layout
from avsrobust.errors import InputError
from avsrobust.metadata import read_clips
from avsrobust.synthetic import SyntheticConfig, generate
from avsrobust.validate import check_dataset


@pytest.fixture
def tree(tmp_path) -> Path:
    cfg = SyntheticConfig(
        seed=1,
        s4_videos={"train": 2, "val": 0, "test": 2},
        ms3_videos={"train": 2, "val": 0, "test": 2},
        image_size=32,
    )
    generate(tmp_path, cfg)
    return tmp_path


def check(root: Path, dataset: str) -> str:
    clips = read_clips(root, dataset)
    return check_dataset(root, clips, [layout.positive_wav(root, c) for c in clips])


def test_a_good_tree_gives_one_row_per_clip(tree):
    report = check(tree, "s4").splitlines()
    assert report[0].split("\t")[:3] == ["split", "video", "category"]
    assert len(report) == 1 + 4
    rows = [dict(zip(report[0].split("\t"), r.split("\t"), strict=True)) for r in report[1:]]
    assert {r["frame_size"] for r in rows} == {"32x32"}
    assert {r["masks"] for r in rows if r["split"] == "train"} == {"1"}
    assert {r["masks"] for r in rows if r["split"] == "test"} == {"5"}
    assert len(check(tree, "ms3").splitlines()) == 1 + 4


def _first(tree: Path, dataset: str) -> layout.Clip:
    return read_clips(tree, dataset)[0]


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda p: p.unlink(), "frame 3 is missing"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nbroken"), "frame 3 is not a readable image"),
        (lambda p: Image.new("RGB", (32, 32)).save(p, format="JPEG"), "is JPEG, expected PNG"),
    ],
)
def test_broken_frames_are_named(tree, breakage, message):
    clip = _first(tree, "ms3")
    frame = layout.frame_png(tree, clip, 3)
    breakage(frame)
    with pytest.raises(InputError, match=message) as err:
        check(tree, "ms3")
    assert str(frame) in str(err.value)


def test_missing_and_mis_sized_masks_are_named(tree):
    clips = [c for c in read_clips(tree, "s4") if c.split == "test"]
    missing = layout.mask_png(tree, clips[0], 4)
    missing.unlink()
    wrong = layout.mask_png(tree, clips[1], 2)
    Image.new("L", (16, 16)).save(wrong)
    with pytest.raises(InputError) as err:
        check(tree, "s4")
    text = str(err.value)
    assert "2 clip(s) with bad files" in text
    assert f"{missing}: mask 4 is missing" in text
    assert f"{wrong}: mask size (16, 16) differs" in text


def test_unreadable_wav_is_named(tree):
    clip = _first(tree, "s4")
    wav = layout.positive_wav(tree, clip)
    wav.write_bytes(b"nope")
    with pytest.raises(InputError, match="not a WAV file") as err:
        check(tree, "s4")
    assert str(wav) in str(err.value)


@pytest.mark.parametrize("odd", [4, 1])
def test_a_frame_of_another_size_is_named_itself(tree, odd):
    """The error names the odd frame (frame 1 too when it is the odd one), not frame 1."""
    clip = _first(tree, "ms3")
    frame = layout.frame_png(tree, clip, odd)
    Image.new("RGB", (16, 16)).save(frame)
    with pytest.raises(InputError) as err:
        check(tree, "ms3")
    assert f"{frame}: frame {odd} is 16x16 px, the clip's other frames 32x32" in str(err.value)


def test_fifos_in_the_data_tree_are_named_not_opened(tree):
    """A named pipe where a WAV or PNG should be would block open() forever: the check runs
    in a child with a deadline so that the old behaviour fails instead of hanging."""
    clips = read_clips(tree, "s4")
    wav = layout.positive_wav(tree, clips[0])
    frame = layout.frame_png(tree, clips[1], 2)
    for path in (wav, frame):
        path.unlink()
        os.mkfifo(path)
    code = (
        "import sys; from avsrobust import layout; from avsrobust.metadata import read_clips;"
        "from avsrobust.validate import check_dataset; from avsrobust.errors import InputError\n"
        f"root = {str(tree)!r}; clips = read_clips(root, 's4')\n"
        "try:\n    check_dataset(root, clips, [layout.positive_wav(root, c) for c in clips])\n"
        "except InputError as exc:\n    print(exc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow_scripts")},
    )
    assert "2 clip(s) with bad files" in proc.stdout, proc.stderr
    assert f"{wav}: audio file is a FIFO, not a regular file" in proc.stdout
    assert f"{frame}: frame 2 is a FIFO, not a regular file" in proc.stdout
