"""Snakemake entry: summary table (TSV, Markdown, JSON) and the report's figures."""

from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    from avsrobust import plots
    from avsrobust.frame_cache import cache_dir, open_cache
    from avsrobust.offscreen_plan import read_fallbacks
    from avsrobust.predictions import open_predictions
    from avsrobust.summary import experiment_row, load_condition, write_summary

    p = snakemake.params
    docs = {}
    for path in snakemake.input.metrics:
        doc = load_condition(path)
        docs.setdefault((doc["dataset"], doc["experiment"]), {})[doc["condition"]] = doc
    # How many videos the split has and how many off-screen donors are fallbacks: the
    # table says when a condition scored a different set than the published one.
    videos = {ds: len(open_cache(cache_dir("results", ds, p.split))) for ds in p.datasets}
    fallback = {
        Path(plan).parent.name: sum(s == p.split for s, _ in read_fallbacks(plan))
        for plan in snakemake.input.plans
    }
    rows = [
        experiment_row(docs[(ds, name)], p.negatives, videos[ds], fallback.get(ds))
        for ds in p.datasets
        for name in p.names[ds]
    ]
    out = Path(snakemake.output.tsv).parent
    write_summary(out, rows, p.negatives, p.split)
    plots.fpr_by_type(rows, p.negatives, snakemake.output.fpr)
    plots.g_metrics(rows, snakemake.output.g)
    for path in snakemake.output.qualitative:
        ds = Path(path).stem.removeprefix("qualitative_")
        cache = open_cache(cache_dir("results", ds, p.split))
        preds = {}
        for name in p.names[ds]:
            run = docs[(ds, name)]["positive"]["runs"]
            first = next(iter(run))
            preds[name] = {
                c: open_predictions(Path("results/predictions") / ds / name / c, first)
                for c in p.conditions
            }
        plots.qualitative(cache, preds, p.conditions, path, n_videos=p.qualitative_videos)
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
