"""AVSBench-Robust: the science behind the workflow, importable without Snakemake.

Each module has one job; the Snakemake rules and the thin entry scripts in
``workflow_scripts/`` only wire these functions to files.
"""

__version__ = "0.1.0"
