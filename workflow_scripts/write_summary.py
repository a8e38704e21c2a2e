"""Snakemake entry: the summary table (TSV, Markdown, JSON) from the metrics of every run."""

from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    from avsrobust.offscreen_plan import read_fallbacks
    from avsrobust.summary import experiment_row, load_condition, write_summary

    p = snakemake.params
    docs = {}
    for path in snakemake.input.metrics:
        doc = load_condition(path)
        docs.setdefault((doc["dataset"], doc["experiment"]), {})[doc["condition"]] = doc
    # How many videos the split has and how many off-screen donors are fallbacks: the
    # table says when a condition scored a different set than the published one.
    fallback = {
        ds: sum(s == p.split for s, _ in read_fallbacks(plan))
        for ds, plan in zip(p.plan_datasets, snakemake.input.plans, strict=True)
    }
    rows = [
        experiment_row(docs[(ds, name)], p.negatives, p.split_videos[ds], fallback.get(ds))
        for ds in p.datasets
        for name in p.names[ds]
    ]
    write_summary(Path(snakemake.output.tsv).parent, rows, p.negatives, p.split)
    for r in rows:
        logger.info(
            "%s/%s: mIoU %s, G-mIoU %s, FPR mean %s",
            r["dataset"],
            r["experiment"],
            r["miou"],
            r["g_miou"],
            r["fpr_mean"],
        )


run_script(main, snakemake.log[0])
