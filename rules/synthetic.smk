if SYNTHETIC:

    rule synthetic_avsbench:
        """The embedded synthetic AVSBench (S4, MS3, AVSS metadata), from a seed."""
        output:
            s4=f"{DATA_ROOT}/{layout.META_FILES['s4']}",
            ms3=f"{DATA_ROOT}/{layout.META_FILES['ms3']}",
            avss=f"{DATA_ROOT}/{layout.AVSS_META}",
        params:
            root=DATA_ROOT,
            synthetic=config["synthetic"],
        log:
            "logs/synthetic_avsbench.log",
        benchmark:
            "results/benchmarks/synthetic_avsbench.tsv"
        conda:
            "../envs/audio.yaml"
        script:
            "../workflow_scripts/make_synthetic.py"
