rule frame_cache:
    """Frames and masks of one (dataset, split), decoded once into uint8 arrays."""
    input:
        unpack(frame_cache_files),
    output:
        frames=wild(CACHE, part=FRAMES_FILE),
        masks=wild(CACHE, part=MASKS_FILE),
        index=wild(CACHE, part=INDEX_FILE),
    log:
        "logs/frame_cache/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/frame_cache/{dataset}/{split}.tsv"
    conda:
        "../envs/audio.yaml"
    params:
        root=DATA_ROOT,
        avss=AVSS,
        image_size=cache_size,
    script:
        "../workflow_scripts/build_frame_cache.py"


# The same cache at another size (CACHE_AT: an imported checkpoint's training size).
use rule frame_cache as frame_cache_at_size with:
    output:
        frames=wild(CACHE_AT, part=FRAMES_FILE),
        masks=wild(CACHE_AT, part=MASKS_FILE),
        index=wild(CACHE_AT, part=INDEX_FILE),
    log:
        "logs/frame_cache/{dataset}/{split}/{size}px.log",
    benchmark:
        "results/benchmarks/frame_cache/{dataset}/{split}/{size}px.tsv"


rule train:
    """One model per (dataset, experiment, seed): plain (positives only) or robust.

    Checkpoints go to results/checkpoints/ (not an output, so Snakemake keeps
    them when the job fails or is preempted); a rerun resumes from them if they
    belong to it (config, inputs), and a finished run removes them (resume.py).
    """
    input:
        unpack(training_inputs),
    output:
        final=wild(MODEL, file="final.pt"),
        best=wild(MODEL, file="best.pt"),
        metrics=wild(MODEL, file="metrics.tsv"),
    log:
        "logs/train/{dataset}/{experiment}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{experiment}/seed{seed}.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=config["training"]["gpus"],
    params:
        cfg=lambda w: training_config(w.dataset, w.experiment, w.seed),
        ckpt_dir=lambda w: CHECKPOINTS.format(
            dataset=w.dataset, experiment=w.experiment, seed=w.seed
        ),
    script:
        "../workflow_scripts/train_model.py"


rule import_checkpoint:
    """A published checkpoint (external_checkpoints) in this project's format.

    The checkpoint and VGGish files are inputs: replacing one re-imports and
    re-scores exactly the models made from it. The imported model carries the
    size it was trained at; it is evaluated at that size.
    """
    input:
        unpack(import_inputs),
    output:
        IMPORTED,
    log:
        "logs/import_checkpoint/{dataset}/{experiment}.log",
    conda:
        "../envs/torch.yaml"
    params:
        cfg=import_params,
    script:
        "../workflow_scripts/import_checkpoint.py"
