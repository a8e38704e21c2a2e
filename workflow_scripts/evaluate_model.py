"""Snakemake entry: predictions + scores of one (dataset, experiment, audio condition)."""

import json
from pathlib import Path

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.atomic import atomic_write_text
    from avsrobust.data import AVSDataset, read_feature_index
    from avsrobust.evaluate import condition_document, evaluate_runs, load_checkpoint, predict
    from avsrobust.frame_cache import open_cache
    from avsrobust.predictions import open_predictions, read_png_tree, write_index
    from avsrobust.runtime import resolve_device

    torch.set_num_threads(max(1, snakemake.threads))
    p = dict(snakemake.params.cfg)
    cond, out_dir = p["condition"], Path(snakemake.output.predictions)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    cache_dir = Path(snakemake.input.cache).parent
    cache = open_cache(cache_dir)
    logger.info(
        "%s/%s %s on %s, %s split, runs %s",
        p["dataset"],
        p["experiment"],
        cond,
        device,
        p["split"],
        p["runs"],
    )

    makers = {}
    if hasattr(snakemake.input, "external"):
        root = Path(snakemake.input.external)
        listed = read_feature_index(snakemake.input.clips)  # videos with this condition's audio
        rows = [i for i, v in enumerate(cache.videos) if v in listed]
        videos = [cache.videos[i] for i in rows]
        categories = [cache.categories[i] for i in rows]

        def make_external():
            info = read_png_tree(
                root,
                p["dataset"],
                p["split"],
                cond,
                videos,
                categories,
                cache.image_size,
                out_dir / "external.npy",
                p["format"],
            )
            write_index(out_dir / "index.tsv", videos, categories)
            logger.info("imported %s from %s: %s", cond, root, info)
            return open_predictions(out_dir, "external")

        makers["external"] = make_external
        source = {"kind": "external", "path": str(root), "format": p["format"]}
    else:
        features = {cond: (snakemake.input.features, snakemake.input.clips)}
        dataset = AVSDataset(cache_dir, features, [cond])
        for run, ckpt in zip(p["runs"], snakemake.input.models, strict=True):

            def make(run=run, ckpt=ckpt):
                model, cfg = load_checkpoint(ckpt, device)
                return predict(
                    model,
                    dataset,
                    cond,
                    out_dir,
                    run,
                    device,
                    batch_size=p["batch_size"],
                    amp=cfg["amp"],
                    channels_last=cfg["channels_last"],
                    gate=cfg["gate_with_classifier"],
                    progress=True,
                )

            makers[run] = make
        source = {"kind": "model", "checkpoints": list(map(str, snakemake.input.models))}

    runs = evaluate_runs(
        makers,
        cache,
        cond,
        device=device,
        avsbench_batch_videos=p["avsbench_batch_videos"],
        log=logger,
    )
    doc = condition_document(p["dataset"], p["experiment"], cond, p["split"], runs, source)
    atomic_write_text(snakemake.output.metrics, json.dumps(doc, indent=2) + "\n")
    logger.info("mean %s", doc["mean"])


run_script(main, snakemake.log[0])
