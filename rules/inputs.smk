rule check_inputs:
    """Every WAV, frame and mask of one (dataset, split), checked before training needs them.

    All of them are declared inputs (common.smk, check_inputs_files): a fixed file
    reruns the check of its split, and what depends on it.
    """
    input:
        unpack(check_inputs_files),
    output:
        CHECK,
    log:
        "logs/inputs/{dataset}/{split}.check.log",
    conda:
        "../envs/audio.yaml"
    params:
        root=DATA_ROOT,
        avss=AVSS,
    script:
        "../workflow_scripts/check_inputs.py"
