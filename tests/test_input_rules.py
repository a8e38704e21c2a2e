"""check_inputs and frame_cache (rules/inputs.smk, rules/training.smk) rerun when a file
they read changes, and the rerun gives the bytes of a clean build from the fixed files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from test_workflow import sha_tree, snakemake

from avsrobust import layout
from avsrobust.metadata import read_clips
from avsrobust.png import png_bytes
from avsrobust.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.workflow

SIZES = {"train": 2, "val": 1, "test": 2}
CACHES = [f"results/frame_cache/s4/{split}/index.tsv" for split in SIZES]


@pytest.fixture
def real_tree(tmp_path):
    """A small AVSBench-layout S4 copy with real frames, masks and WAVs."""
    root = tmp_path / "avsbench"
    generate(root, SyntheticConfig(seed=5, s4_videos=SIZES, image_size=16), datasets=("s4",))
    return root


def jobs_run(text: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job a run lists."""
    blocks = re.split(r"^(?:local)?rule (\w+):\n", text, flags=re.M)[1:]
    return [
        (rule, re.search(r"^\s+output: ([^,\s]+)", body, re.M).group(1))
        for rule, body in zip(blocks[::2], blocks[1::2], strict=True)
    ]


@pytest.mark.parametrize("kind", ["mask", "frame"])
def test_a_fixed_png_reruns_the_check_and_cache_of_its_split_only(real_tree, tmp_path, kind):
    config = {"avsbench_root": str(real_tree), "datasets": ["s4"], "training": {"image_size": 16}}
    work = tmp_path / "work"
    snakemake(work, config, *CACHES)
    clip = next(c for c in read_clips(real_tree, "s4") if c.split == "test")
    png = (layout.mask_png if kind == "mask" else layout.frame_png)(real_tree, clip, 3)
    # A user fixes one PNG of the test split (here: another mask, or another frame).
    shape = (16, 16) if kind == "mask" else (16, 16, 3)
    fixed = np.zeros(shape, np.uint8)
    fixed[4:12, 4:12] = 255
    png.write_bytes(png_bytes(fixed))

    rerun = snakemake(work, config, *CACHES)
    text = rerun.stdout + rerun.stderr
    assert "Nothing to be done" not in text
    assert sorted(jobs_run(text)) == [
        ("check_inputs", "results/inputs/s4/test.check.tsv"),
        ("frame_cache", "results/frame_cache/s4/test/frames.npy"),
    ], text[-3000:]

    clean = tmp_path / "clean"
    snakemake(clean, config, *CACHES)
    for folder in ("results/frame_cache", "results/inputs"):
        assert sha_tree(work / folder) == sha_tree(clean / folder)
    masks = np.load(work / "results/frame_cache/s4/test/masks.npy")
    if kind == "mask":
        assert masks[0, 2].sum() == 64  # the fixed mask is what the cache holds


def test_a_replaced_wav_reruns_its_split_check(real_tree, tmp_path):
    config = {"avsbench_root": str(real_tree), "datasets": ["s4"]}
    work = tmp_path / "work"
    target = "results/inputs/s4/val.check.tsv"
    snakemake(work, config, target)
    clip = next(c for c in read_clips(real_tree, "s4") if c.split == "val")
    wav = layout.positive_wav(real_tree, clip)
    # The user replaces it with another recording (other samples, same format). A file
    # rewritten with the same bytes is no change: Snakemake's input checksums leave it alone.
    samples, rate = sf.read(wav, dtype="int16")
    info = sf.info(wav)
    sf.write(wav, samples // 2, rate, subtype=info.subtype, format=info.format)
    rerun = snakemake(work, config, target, "-n")
    assert f"reason: Updated input files: {wav}" in rerun.stdout + rerun.stderr
