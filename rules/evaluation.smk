rule evaluate:
    """Predictions and scores of one (dataset, experiment) under every audio condition.

    Trained experiments: each seed's model is loaded once and predicts the
    evaluation split under every condition's audio; imported checkpoints
    likewise, at the size they were trained at; external prediction sets:
    their PNGs are imported. Either way the saved predictions are what gets
    scored, one metrics file and one predictions folder per condition. One
    job, so one GPU allocation on a cluster, per model.
    """
    input:
        unpack(evaluation_inputs),
    output:
        metrics=expand(METRICS, condition=CONDITIONS, allow_missing=True),
        predictions=[
            directory(p)
            for p in expand(PREDICTIONS, condition=CONDITIONS, allow_missing=True)
        ],
    log:
        "logs/evaluate/{dataset}/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{experiment}.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=EVAL["gpus"],
    params:
        cfg=evaluation_params,
    script:
        "../workflow_scripts/evaluate_model.py"


rule export_png:
    """One run's predictions as PNG masks in AVSBench's layout (a root for re-scoring)."""
    input:
        PREDICTIONS,
    output:
        directory(PREDICTIONS_PNG),
    log:
        "logs/export_png/{dataset}/{experiment}/{run}/{condition}.log",
    conda:
        "../envs/audio.yaml"
    params:
        split=EVAL_SPLIT,
    script:
        "../workflow_scripts/export_png.py"


rule summary:
    """The summary table (TSV, Markdown, JSON): one row per dataset and experiment."""
    input:
        metrics=summary_metrics(),
        plans=summary_plans(),
    output:
        tsv=report(
            SUMMARY.format(file="summary.tsv"),
            caption="../report/summary.rst",
            category="1. Summary",
        ),
        md=SUMMARY.format(file="summary.md"),
        json=SUMMARY.format(file="summary.json"),
    log:
        "logs/summary.log",
    conda:
        "../envs/audio.yaml"
    params:
        datasets=DATASETS,
        names={ds: evaluated(ds) for ds in DATASETS},
        negatives=NEGATIVES,
        split=EVAL_SPLIT,
        # videos of the evaluated split (what each condition's count is out of)
        split_videos={ds: len(CLIPS[ds][EVAL_SPLIT]) for ds in DATASETS},
        plan_datasets=DATASETS if DONOR_NEGATIVES else [],
    script:
        "../workflow_scripts/write_summary.py"


rule figures:
    """The report's figures: FPR per negative type, G-metrics, qualitative masks."""
    input:
        summary=SUMMARY.format(file="summary.json"),
        predictions=[f[-1] for f in summary_predictions()],
        caches=[f[-1] for f in summary_caches()],
    output:
        fpr=report(
            SUMMARY.format(file="fpr_by_type.png"),
            caption="../report/fpr_by_type.rst",
            category="2. Robustness",
        ),
        g=report(
            SUMMARY.format(file="g_metrics.png"),
            caption="../report/g_metrics.rst",
            category="2. Robustness",
        ),
        qualitative=report(
            expand(
                SUMMARY.format(file="qualitative_{dataset}.png"),
                dataset=[ds for ds in DATASETS if evaluated(ds)],
            ),
            caption="../report/qualitative.rst",
            category="3. Examples",
        ),
    log:
        "logs/figures.log",
    conda:
        "../envs/plots.yaml"
    params:
        # what each input file is, in input order (the script never rebuilds a path)
        predictions=[f[:-1] for f in summary_predictions()],
        caches=[f[:-1] for f in summary_caches()],
        sizes=summary_sizes(),
        conditions=CONDITIONS,
        qualitative_videos=EVAL["qualitative_videos"],
    script:
        "../workflow_scripts/plot_summary.py"
