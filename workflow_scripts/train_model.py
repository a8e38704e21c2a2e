"""Snakemake entry: train one model for one (dataset, experiment), resuming if preempted."""

import sys
from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.data import build_dataset
    from avsrobust.train import Preempted, train

    torch.set_num_threads(max(1, snakemake.threads))
    cfg = dict(snakemake.params.cfg)
    dataset = cfg["dataset"]
    conditions = ("positive", *cfg["negatives"])
    train_ds = build_dataset(cfg, dataset, "train", conditions=conditions)
    val_ds = build_dataset(cfg, dataset, "val", conditions=conditions)
    out_dir = Path(snakemake.output.final).parent
    logger.info(
        "training %s on %s: %d train / %d val videos",
        snakemake.wildcards.experiment,
        dataset,
        len(train_ds),
        len(val_ds),
    )
    try:
        summary = train(
            cfg,
            train_ds,
            val_ds,
            out_dir,
            Path(snakemake.params.ckpt_dir),
            device="auto",
            progress=True,
            log=logger.info,
        )
    except Preempted as exc:
        logger.warning("preempted: %s (rerun to resume from %s)", exc, snakemake.params.ckpt_dir)
        sys.exit(143)
    logger.info("done: %s", summary)


run_script(main, snakemake.log[0])
