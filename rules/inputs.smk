rule check_inputs:
    """Every WAV, frame and mask of one dataset, checked before training needs them."""
    input:
        meta=lambda w: metadata_files(w.dataset),
    output:
        CHECK,
    log:
        "logs/inputs/{dataset}.check.log",
    conda:
        "../envs/audio.yaml"
    params:
        root=DATA_ROOT,
        avss=AVSS,
        splits=SPLITS,
    script:
        "../workflow_scripts/check_inputs.py"
