"""Snakemake entry: decode one (dataset, split)'s frames and masks once into a uint8 cache."""

from pathlib import Path

from avsrobust.frame_cache import build_cache
from avsrobust.joblog import run_script
from avsrobust.metadata import read_clips

snakemake = globals()["snakemake"]


def main(logger):
    dataset, split = snakemake.wildcards.dataset, snakemake.wildcards.split
    clips = [
        c
        for c in read_clips(snakemake.params.root, dataset, snakemake.params.avss)
        if c.split == split
    ]
    out = Path(snakemake.output.frames).parent
    build_cache(
        snakemake.params.root,
        clips,
        out,
        snakemake.params.image_size,
        workers=max(1, snakemake.threads),
    )
    logger.info(
        "%d %s/%s clips cached at %d px in %s",
        len(clips),
        dataset,
        split,
        snakemake.params.image_size,
        out,
    )


run_script(main, snakemake.log[0])
