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
        image_size=config["training"]["image_size"],
    script:
        "../workflow_scripts/build_frame_cache.py"


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
