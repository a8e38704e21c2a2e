"""Snakemake entry: the report's figures from the summary table and the saved predictions."""

from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    from avsrobust import plots
    from avsrobust.frame_cache import open_cache
    from avsrobust.predictions import open_predictions
    from avsrobust.summary import load_summary

    p = snakemake.params
    summary = load_summary(snakemake.input.summary)
    rows, negatives = summary["rows"], summary["negatives"]
    plots.fpr_by_type(rows, negatives, snakemake.output.fpr)
    plots.g_metrics(rows, snakemake.output.g)
    # the evaluated split's frame cache at every size a model was evaluated at
    caches = {
        (ds, size): open_cache(Path(path).parent)
        for (ds, size, part), path in zip(p.caches, snakemake.input.caches, strict=True)
        if part == "index"
    }
    folders = {
        tuple(key): path
        for key, path in zip(p.predictions, snakemake.input.predictions, strict=True)
    }
    for path in snakemake.output.qualitative:
        ds = Path(path).stem.removeprefix("qualitative_")
        preds, frames = {}, {}
        for r in rows:
            if r["dataset"] == ds:
                name = r["experiment"]
                first = r["run_names"][0]  # one run per experiment: the first scored
                preds[name] = {
                    c: open_predictions(folders[(ds, name, c)], first) for c in p.conditions
                }
                frames[name] = caches[(ds, p.sizes[ds][name])]
        plots.qualitative(frames, preds, p.conditions, path, n_videos=p.qualitative_videos)
        logger.info("%s: %s", path, ", ".join(preds))


run_script(main, snakemake.log[0])
