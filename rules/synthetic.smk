if SYNTHETIC:

    rule synthetic_avsbench:
        """The embedded synthetic AVSBench (S4, MS3, AVSS metadata), from a seed."""
        output:
            s4=f"{DATA_ROOT}/{layout.META_FILES['s4']}",
            ms3=f"{DATA_ROOT}/{layout.META_FILES['ms3']}",
            avss=f"{DATA_ROOT}/{layout.AVSS_META}",
        log:
            "logs/synthetic_avsbench.log",
        benchmark:
            "results/benchmarks/synthetic_avsbench.tsv"
        conda:
            "../envs/audio.yaml"
        params:
            root=lambda w, output: str(Path(output.s4).parents[1]),
            synthetic=config["synthetic"],
        script:
            "../workflow_scripts/make_synthetic.py"
