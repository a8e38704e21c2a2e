"""Snakemake entry: choose off-screen donors for one dataset."""

from avsrobust.joblog import run_script
from avsrobust.metadata import read_clips
from avsrobust.offscreen_plan import plan_donors, write_plan
from avsrobust.synthetic import SyntheticConfig, visible_object_veto

snakemake = globals()["snakemake"]


def main(logger):
    dataset, policy = snakemake.wildcards.dataset, snakemake.params.policy
    clips = [
        c
        for c in read_clips(snakemake.params.root, dataset, snakemake.params.avss)
        if c.split in snakemake.params.splits
    ]
    synthetic = snakemake.params.synthetic  # None for a real AVSBench copy
    veto = (
        None if synthetic is None else visible_object_veto(SyntheticConfig.from_mapping(synthetic))
    )
    rows, issues = plan_donors(
        clips, snakemake.params.seed, policy, where=f"{dataset} metadata", veto=veto
    )
    what = "fallback donor for" if policy == "fallback" else "skipped"
    for video, why in sorted(issues.items()):
        logger.warning("%s %s: %s", what, video, why)
    write_plan(snakemake.output[0], rows)
    for split in snakemake.params.splits:
        n = sum(c.split == split for c in clips)
        planned = [r for r in rows if r.target.split == split]
        logger.info(
            "%s %s: off-screen donors for %d of %d clips (%d fallback donors, policy %s)",
            dataset,
            split,
            len(planned),
            n,
            sum(r.fallback for r in planned),
            policy,
        )


run_script(main, snakemake.log[0])
