"""Snakemake entry: VGGish log-mel features of one (dataset, split, condition)."""

from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.features import extract_features  # torch: once per job
    from avsrobust.row_index import FEATURE_COLUMNS, write_index
    from avsrobust.runtime import resolve_device

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
    rows = [
        (video, cat, wav) for (video, cat), wav in zip(snakemake.params.clips, wavs, strict=True)
    ]
    write_index(snakemake.output.index, FEATURE_COLUMNS, rows)
    logger.info("done")


run_script(main, snakemake.log[0])
