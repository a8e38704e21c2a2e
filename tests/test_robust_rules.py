"""The per-clip rules (rules/robust.smk) rebuild exactly what depends on a changed input."""

from __future__ import annotations

import re

import pytest
from helpers import tone
from test_workflow import sha_tree, snakemake

from avsrobust import layout
from avsrobust.manifest import read_manifest
from avsrobust.wav import AudioFormat, write_wav

pytestmark = pytest.mark.workflow

TARGETS = [f"results/robust/s4/{split}.manifest.tsv" for split in ("train", "test")]


def outputs_built(text: str) -> set[str]:
    """Output paths of the jobs a (dry-)run lists."""
    return set(re.findall(r"^\s*output: (\S+)", text, re.M))


def test_replacing_a_donor_wav_rebuilds_exactly_the_clips_made_from_it(tiny_root, tmp_path):
    config = {"avsbench_root": str(tiny_root), "seed": 4}
    work = tmp_path / "work"
    snakemake(work, config, *TARGETS)
    rows = read_manifest(work / "results/robust/s4/train.manifest.tsv")
    offscreen = [r for r in rows if r["negtype"] == "offscreen"]
    donor = offscreen[0]["donor"]
    # the off-screen clips and the mixtures made from it (they share the plan's donor)
    takers = {r["path"] for r in rows if r["donor"] == donor}
    assert {r["negtype"] for r in rows if r["donor"] == donor} == {"offscreen", "mixture"}
    donor_clip = next(
        layout.Clip("s4", "train", r["video"], r["category"], frozenset())
        for r in rows
        if r["video"] == donor
    )
    # A user replaces the donor's broken WAV (here: another tone, another sample rate).
    write_wav(
        layout.positive_wav(tiny_root, donor_clip),
        tone(AudioFormat(8000), 999.0),
        AudioFormat(8000),
    )

    rerun = snakemake(work, config, *TARGETS)
    built = outputs_built(rerun.stdout + rerun.stderr)
    own = {
        str(layout.negative_wav("results", "s4", n, "train", donor_clip.item))
        for n in ("silence", "noise", "offscreen", "mixture")
    }
    assert built == takers | own | {"results/robust/s4/train.manifest.tsv"}, built

    clean = tmp_path / "clean"
    snakemake(clean, config, *TARGETS)
    assert sha_tree(work / "results/robust") == sha_tree(clean / "results/robust")
