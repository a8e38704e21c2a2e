"""Snakemake entry: predictions + scores of one (dataset, experiment) under every condition."""

from avsrobust.joblog import run_script

snakemake = globals()["snakemake"]


def main(logger):
    import torch

    from avsrobust.evaluate import evaluate_model
    from avsrobust.runtime import resolve_device

    torch.set_num_threads(max(1, snakemake.threads))
    inp, out = snakemake.input, snakemake.output
    evaluate_model(
        dict(snakemake.params.cfg),
        cache_index=inp.cache,
        clips=list(inp.clips),
        metrics=list(out.metrics),
        predictions=list(out.predictions),
        features=list(inp.features) if hasattr(inp, "features") else None,
        models=list(inp.models) if hasattr(inp, "models") else None,
        external=inp.external if hasattr(inp, "external") else None,
        device=resolve_device("auto"),
        log=logger,
    )


run_script(main, snakemake.log[0])
