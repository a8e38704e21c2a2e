"""Snakemake entry: the manifest of one split's negative audio."""

from avsrobust.joblog import run_script
from avsrobust.manifest import write_manifest
from avsrobust.offscreen_plan import read_plan

snakemake = globals()["snakemake"]


def main(logger):
    split = snakemake.wildcards.split
    donors = {}
    if snakemake.input.plan:
        donors = {v: d for (s, v), (d, _) in read_plan(snakemake.input.plan).items() if s == split}
    write_manifest(snakemake.output[0], list(snakemake.input.wavs), donors)
    logger.info("%d files in manifest %s", len(snakemake.input.wavs), snakemake.output[0])


run_script(main, snakemake.log[0])
