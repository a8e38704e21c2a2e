# The per-clip jobs (and the per-dataset donor plan they wait for) take
# milliseconds: they run inside the main Snakemake process on every executor,
# also on SLURM, where a submission per clip (or a grouped one, whose node
# starts Snakemake again for every member) costs seconds. Everything that
# reads a whole split or trains goes to the cluster.
localrules:
    offscreen_plan,
    negative_audio,
    offscreen_audio,
    mixture_audio,


rule offscreen_plan:
    """One reviewable table (video -> donor) per dataset, following the group rules."""
    input:
        meta=lambda w: metadata_files(w.dataset),
    output:
        PLAN,
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
        synthetic=config["synthetic"] if SYNTHETIC else None,
    script:
        "../workflow_scripts/plan_offscreen.py"


rule negative_audio:
    """One silence or noise clip per (dataset, split, video, negative type).

    Runs in Snakemake's own process (no interpreter start per clip), locally
    and on SLURM (a localrule): a clip takes milliseconds, a fresh Python with
    numpy takes 100 ms. It therefore uses Snakemake's environment
    (envs/workflow.yaml); conda: is not allowed with run:.
    """
    input:
        positive=POSITIVE_PATTERN,
    output:
        wav="results/robust/{data}/audio_wav_{negtype}/{split}/{item}.wav",
    log:
        "logs/robust/{data}/audio_wav_{negtype}/{split}/{item}.log",
    wildcard_constraints:
        negtype="silence|noise",
    # Zero cores: the job runs inside Snakemake's process, so one scheduling
    # pass can start hundreds of them.
    threads: 0
    params:
        # Recorded in Snakemake's metadata: a changed level, colour or seed
        # reruns exactly the affected clips (rerun trigger "params").
        settings=lambda w: NEG_SETTINGS.relevant(w.negtype),
    run:
        from avsrobust.workflow_jobs import negative_job

        negative_job(
            NegativeSettings(**params.settings),
            DATA_ROOT,
            wildcards,
            wildcards.negtype,
            output.wav,
            log[0],
        )


rule offscreen_audio:
    """One off-screen clip per (dataset, split, video): its planned donor's audio.

    In-process like negative_audio. mixture_audio is this rule with its own
    output and params.
    """
    input:
        positive=POSITIVE_PATTERN,
        plan=offscreen_plan_of,
        # The donor's WAV (real trees; synthetic clips all come from one job,
        # which the positive pattern already names).
        donor=[] if SYNTHETIC else offscreen_donor_wav,
    output:
        wav="results/robust/{data}/audio_wav_offscreen/{split}/{item}.wav",
    log:
        "logs/robust/{data}/audio_wav_offscreen/{split}/{item}.log",
    threads: 0
    params:
        negtype="offscreen",
        # The settings that shape these clips (none for off-screen: the plan does),
        # recorded so that a change reruns exactly them.
        settings=NEG_SETTINGS.relevant("offscreen"),
    run:
        from avsrobust.workflow_jobs import negative_job

        # only the settings that shape the clip, as recorded in params (negative_audio's way)
        negative_job(
            NegativeSettings(**params.settings),
            DATA_ROOT,
            wildcards,
            params.negtype,
            output.wav,
            log[0],
            plan=input.plan,
            declared_donor=input.donor or None,
        )


use rule offscreen_audio as mixture_audio with:
    output:
        wav="results/robust/{data}/audio_wav_mixture/{split}/{item}.wav",
    log:
        "logs/robust/{data}/audio_wav_mixture/{split}/{item}.log",
    params:
        # One mixture clip per (dataset, split, video): its own audio plus its planned
        # off-screen donor's at negative_audio.mixture_snr_db (the correct mask stays
        # the original one).
        negtype="mixture",
        settings=NEG_SETTINGS.relevant("mixture"),


rule split_manifest:
    """Checksums of one split's negatives; asking for it (re)builds exactly that split."""
    input:
        wavs=split_negatives,
        plan=lambda w: (PLAN.format(dataset=w.dataset) if DONOR_NEGATIVES else []),
    output:
        MANIFEST,
    log:
        "logs/robust/{dataset}/{split}.manifest.log",
    conda:
        "../envs/audio.yaml"
    script:
        "../workflow_scripts/write_manifest.py"
