"""Snakemake entry: VGGish log-mel features of one (dataset, split, condition)."""

import csv
from pathlib import Path

from avsrobust.atomic import atomic_open
from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.features import extract_features, resolve_device  # torch: once per job

    torch.set_num_threads(max(1, snakemake.threads))
    device = resolve_device(snakemake.params.device)
    wavs = [Path(p) for p in snakemake.params.wavs]
    logger.info("%d clips -> %s on %s", len(wavs), snakemake.output.npy, device)
    extract_features(
        wavs,
        Path(snakemake.output.npy),
        batch_size=snakemake.params.batch_size,
        seconds=snakemake.params.seconds,
        progress=True,
        device=str(device),
    )
    with atomic_open(snakemake.output.index, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["row", "video", "category", "path"])
        for row, ((video, category), wav) in enumerate(
            zip(snakemake.params.clips, wavs, strict=True)
        ):
            writer.writerow([row, video, category, wav])
    logger.info("done")


run_script(main, snakemake.log[0])
