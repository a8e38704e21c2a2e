rule offscreen_plan:
    """One reviewable table (video -> donor) per dataset, following the group rules."""
    input:
        meta=lambda w: metadata_files(w.dataset),
    output:
        "results/robust/{dataset}/offscreen_plan.tsv",
    log:
        "logs/robust/{dataset}/offscreen_plan.log",
    conda:
        "../envs/audio.yaml"
    params:
        root=DATA_ROOT,
        avss=AVSS,
        seed=config["seed"],
        policy=config["offscreen"]["on_missing"],
        splits=SPLITS,
    script:
        "../workflow_scripts/plan_offscreen.py"


rule negative_audio:
    """One negative clip per (dataset, split, video, negative type).

    Runs in Snakemake's own process (no interpreter start per clip): a clip
    takes milliseconds, a fresh Python with numpy takes 100 ms. It therefore
    uses Snakemake's environment (envs/workflow.yaml); conda: is not allowed
    with run:.
    """
    input:
        negative_inputs,
    output:
        wav="results/robust/{data}/audio_wav_{negtype}/{split}/{item}.wav",
    log:
        "logs/robust/{data}/audio_wav_{negtype}/{split}/{item}.log",
    group:
        "negative_audio"
    run:
        from avsrobust.workflow_jobs import negative_job

        negative_job(NEG_SETTINGS, DATA_ROOT, wildcards, input, output.wav, log[0])


rule split_manifest:
    """Checksums of one split's negatives; asking for it (re)builds exactly that split."""
    input:
        wavs=split_negatives,
        plan=lambda w: (
            f"results/robust/{w.dataset}/offscreen_plan.tsv"
            if "offscreen" in NEGATIVES
            else []
        ),
    output:
        "results/robust/{dataset}/{split}.manifest.tsv",
    log:
        "logs/robust/{dataset}/{split}.manifest.log",
    conda:
        "../envs/audio.yaml"
    script:
        "../workflow_scripts/write_manifest.py"
