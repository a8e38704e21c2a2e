"""Snakemake entry: train one model for one (dataset, experiment), resuming if preempted."""

import sys
from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.data import AVSDataset
    from avsrobust.resume import Preempted
    from avsrobust.train import train

    torch.set_num_threads(max(1, snakemake.threads))
    cfg = dict(snakemake.params.cfg)
    dataset = cfg["dataset"]
    conditions = ("positive", *cfg["negatives"])
    inp = snakemake.input

    def split_data(split):
        # the files the rule declared (common.smk, training_inputs), never rebuilt paths
        features = {c: (inp[f"{split}_{c}"], inp[f"{split}_{c}_index"]) for c in conditions}
        return AVSDataset(Path(inp[f"{split}_index"]).parent, features, conditions)

    train_ds, val_ds = split_data("train"), split_data("val")
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
