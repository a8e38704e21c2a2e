"""AVSBench-Robust workflow: negative audio and features for AVSBench (S4, MS3).

snakemake --cores all                      # embedded synthetic benchmark
snakemake --cores all --configfile config/avsbench.yaml
snakemake -n                               # inspect the DAG
"""


include: "rules/common.smk"
include: "rules/synthetic.smk"
include: "rules/inputs.smk"
include: "rules/robust.smk"
include: "rules/features.smk"
include: "rules/training.smk"


localrules:
    all,


rule all:
    input:
        all_targets(),
