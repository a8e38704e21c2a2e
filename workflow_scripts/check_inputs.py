"""Snakemake entry: check every WAV, frame and mask of one (dataset, split)."""

from pathlib import Path

from avsrobust import layout
from avsrobust.atomic import atomic_write_text
from avsrobust.joblog import run_script
from avsrobust.metadata import read_clips
from avsrobust.validate import check_dataset

snakemake = globals()["snakemake"]


def main(logger):
    root = Path(snakemake.params.root)
    dataset, split = snakemake.wildcards.dataset, snakemake.wildcards.split
    clips = [c for c in read_clips(root, dataset, snakemake.params.avss) if c.split == split]
    report = check_dataset(root, clips, [layout.positive_wav(root, c) for c in clips])
    atomic_write_text(snakemake.output[0], report)
    logger.info("%d %s %s clips checked: WAV, 5 frames and masks each", len(clips), dataset, split)


run_script(main, snakemake.log[0])
