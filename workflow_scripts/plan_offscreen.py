"""Snakemake entry: choose off-screen donors for one dataset."""

from avsrobust.joblog import run_script
from avsrobust.metadata import read_clips
from avsrobust.offscreen_plan import plan_donors, write_plan
from avsrobust.synthetic import SyntheticConfig, visible_object_veto

snakemake = globals()["snakemake"]


def main(logger):
    dataset = snakemake.wildcards.dataset
    clips = [
        c
        for c in read_clips(snakemake.params.root, dataset, snakemake.params.avss)
        if c.split in snakemake.params.splits
    ]
    synthetic = snakemake.params.synthetic  # None for a real AVSBench copy
    veto = (
        None if synthetic is None else visible_object_veto(SyntheticConfig.from_mapping(synthetic))
    )
    rows, skipped = plan_donors(
        clips,
        snakemake.params.seed,
        snakemake.params.policy,
        where=f"{dataset} metadata",
        veto=veto,
    )
    for video, why in sorted(skipped.items()):
        logger.warning("skipped %s: %s", video, why)
    write_plan(snakemake.output[0], rows)
    logger.info("%d donors planned, %d clips skipped", len(rows), len(skipped))


run_script(main, snakemake.log[0])
