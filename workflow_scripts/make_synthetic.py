"""Snakemake entry: write the embedded synthetic AVSBench."""

from pathlib import Path

from avsrobust.joblog import run_script
from avsrobust.synthetic import SyntheticConfig, generate

snakemake = globals()["snakemake"]


def main(logger):
    cfg = SyntheticConfig.from_mapping(snakemake.params.synthetic)
    logger.info("synthetic AVSBench %s -> %s", cfg, snakemake.params.root)
    generate(Path(snakemake.params.root), cfg, progress=True)
    logger.info("done")


run_script(main, snakemake.log[0])
