# Entry points for a fresh machine (see README):
#   make run    set up .venv, build AVSBench-Robust from the embedded synthetic benchmark, train, evaluate
#   make test   set up .venv and run the tests (SLURM tests start a local one-node cluster)
#   make lint   ruff, snakefmt, snakemake --lint
#   make envs   build every envs/*.yaml into .venvs/<env> and import each rule's code in it
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-requirements
CORES ?= all

.PHONY: venv run test lint envs bench clean

venv: $(STAMP)

# Reinstalls only when requirements.txt changes (torch's CUDA wheels are ~5 GB).
$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check pip==25.3
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	cp requirements.txt $(STAMP)

run: venv
	$(VENV)/bin/snakemake --cores $(CORES)

# The SLURM tests need a one-node cluster (Debian packages, root): started here,
# stopped afterwards whatever the result; without it they are skipped, unless
# AVSROBUST_REQUIRE_SLURM=1 (CI), which makes a missing cluster a failure.
test: venv
	@started=0; \
	if bash tests/slurm/slurm_local.sh start; then started=1; \
	else echo "make test: no local SLURM cluster; SLURM tests will be skipped"; fi; \
	status=0; $(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$started = 1 ]; then bash tests/slurm/slurm_local.sh stop; fi; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check workflow_scripts tests benchmarks
	$(VENV)/bin/ruff format --check workflow_scripts tests benchmarks
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(VENV)/bin/snakemake --lint --cores 1

# Reused while an env file is unchanged; envs/torch.yaml is linked from .venv (see the script).
envs: venv
	$(VENV)/bin/python .ci/env_venvs.py

bench: venv
	$(VENV)/bin/python benchmarks/robust_pipeline.py
	$(VENV)/bin/python benchmarks/train_throughput.py --out benchmarks/out/train_throughput.json

clean:
	rm -rf results logs .snakemake
