rule audio_features:
    """VGGish log-mel for every clip of one (dataset, split, condition), one torch import."""
    input:
        feature_inputs,
    output:
        npy=FEATURES,
        index=FEATURE_INDEX,
    log:
        "logs/features/{dataset}/{split}/{condition}.log",
    benchmark:
        "results/benchmarks/features/{dataset}/{split}/{condition}.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=config["features"]["gpus"],
    params:
        wavs=lambda w: condition_wavs(w.dataset, w.split, w.condition),
        clips=lambda w: [
            (c.video, c.category) for c in clips_for(w.dataset, w.split, w.condition)
        ],
        batch_size=config["features"]["batch_size"],
        seconds=config["features"]["seconds"],
        device=config["features"]["device"],
    script:
        "../workflow_scripts/extract_features.py"
