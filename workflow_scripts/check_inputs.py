"""Snakemake entry: check every WAV, frame and mask of one dataset."""

from pathlib import Path

from avsrobust import layout
from avsrobust.atomic import atomic_write_text
from avsrobust.joblog import run_script
from avsrobust.metadata import read_clips
from avsrobust.validate import check_dataset

snakemake = globals()["snakemake"]


def main(logger):
    root, dataset = Path(snakemake.params.root), snakemake.wildcards.dataset
    clips = [
        c
        for c in read_clips(root, dataset, snakemake.params.avss)
        if c.split in snakemake.params.splits
    ]
    report = check_dataset(root, clips, [layout.positive_wav(root, c) for c in clips])
    atomic_write_text(snakemake.output[0], report)
    logger.info("%d %s clips checked: WAV, 5 frames and masks each", len(clips), dataset)


run_script(main, snakemake.log[0])
