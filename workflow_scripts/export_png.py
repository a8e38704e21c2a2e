"""Snakemake entry: one run's predictions of one condition as PNGs in AVSBench's layout."""

from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    from avsrobust.predictions import export_png, open_predictions

    w = snakemake.wildcards
    preds = open_predictions(snakemake.input[0], w.run)
    # output = <root>/{condition}: the PNG root is its parent, as the import expects
    root = Path(snakemake.output[0]).parent
    n = export_png(preds, root, w.dataset, snakemake.params.split, w.condition)
    logger.info(
        "%d PNGs of %s/%s %s %s under %s", n, w.dataset, w.experiment, w.run, w.condition, root
    )


run_script(main, snakemake.log[0])
