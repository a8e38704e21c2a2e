"""AVSBench-Robust workflow: negative audio, training and evaluation on AVSBench (S4, MS3).

snakemake --cores all                      # embedded synthetic benchmark
snakemake --cores all --configfile config/avsbench.yaml
snakemake -n                               # inspect the DAG
"""


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/synthetic.smk"
include: "rules/inputs.smk"
include: "rules/robust.smk"
include: "rules/features.smk"
include: "rules/training.smk"
include: "rules/evaluation.smk"


localrules:
    all,


rule all:
    input:
        all_targets(),
