"""The pins in requirements.txt (the one place) and envs/*.yaml must agree, and every
rule's env provides what the rule's code imports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from import_closure import (
    closure,
    distribution_of,
    env_pip,
    rule_closures,
    rules,
    snakemake_process_sources,
)

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"requirements.txt: {line!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


def env_files() -> list[Path]:
    files = sorted((REPO / "envs").glob("*.yaml"))
    assert files, "no envs/*.yaml"
    return files


def test_requirements_pin_torch_and_torchaudio_together():
    pins = requirements()
    assert pins["torch"] == pins["torchaudio"] == "2.11.0"
    assert pins["snakemake"] == "9.27.1"
    assert pins["snakemake-executor-plugin-slurm"] == "2.8.0"


def test_every_env_pins_every_package_like_requirements():
    pins = requirements()
    for path in env_files():
        env = yaml.safe_load(path.read_text())
        assert set(env) >= {"channels", "dependencies"}, path
        pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
        conda = [d for d in env["dependencies"] if isinstance(d, str)]
        for dep in conda:
            assert re.fullmatch(r"[a-z0-9_\-]+=[0-9][\w.]*", dep), f"{path.name}: {dep!r} unpinned"
        assert "python=3.11" in conda, path.name
        assert len(pip_sections) == 1, path.name
        for dep in pip_sections[0]:
            match = PIN.match(dep)
            assert match, f"{path.name}: {dep!r} is not pinned with =="
            name, version = match.group(1).lower(), match.group(2)
            assert name in pins, f"{path.name}: {name} is not in requirements.txt"
            assert pins[name] == version, (
                f"{path.name}: {name}=={version}, requirements {pins[name]}"
            )


def test_every_conda_directive_names_an_existing_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} missing"


# ----------------------------------------------------------------------------- import closures
def test_every_rule_with_a_script_has_an_env_and_every_rule_a_place_to_run():
    found = {r.name: r for r in rules()}
    assert {"train", "evaluate", "summary", "figures", "negative_audio"} <= set(found)
    for r in found.values():
        assert r.conda or r.run or r.local, f"rule {r.name}: no conda env, run: block or localrule"
        if r.script:
            assert r.conda, f"rule {r.name}: a script with no conda: env"
            assert r.script.is_file(), f"rule {r.name}: {r.script} missing"


def test_every_rule_env_provides_what_its_code_imports():
    """Static closure of each rule's script (function-level imports included) against the
    pip list of its env file: a missing package fails here, not in a cluster job."""
    problems = []
    for what, env, clo in rule_closures():
        have = set(env_pip(env))
        missing = sorted(clo.distributions() - have)
        if missing:
            problems.append(f"{what}: {env.name} lacks {missing}")
    assert not problems, "\n".join(problems)


def test_light_jobs_import_neither_torch_nor_matplotlib():
    for what, env, clo in rule_closures():
        heavy = clo.distributions() & {"torch", "torchvision", "torchaudio", "matplotlib"}
        if env.name in ("audio.yaml", "workflow.yaml"):
            assert not heavy, f"{what} imports {sorted(heavy)}"


def test_closure_follows_package_and_function_level_imports():
    """The closure finds what a job imports only inside a function, and through the package."""
    clo = closure("from avsrobust.negatives import make_noise\n")
    # negatives -> audio_ops imports scipy inside conform(); wav imports soundfile
    assert {"avsrobust.negatives", "avsrobust.audio_ops", "avsrobust.wav"} <= clo.modules
    assert {"scipy", "numpy", "soundfile"} <= clo.third_party
    plots = closure("def f():\n    from avsrobust import plots\n")
    assert "matplotlib" in plots.third_party and "avsrobust.plots" in plots.modules
    models = closure("import avsrobust.models\n")  # relative imports inside a subpackage
    assert {"avsrobust.models.tpavi", "avsrobust.errors", "avsrobust.weights"} <= models.modules
    assert {"torch", "torchvision"} <= models.third_party
    assert distribution_of("PIL") == "pillow" and distribution_of("yaml") == "pyyaml"


def test_snakemakes_process_closure_reads_wrapped_imports():
    """snakefmt wraps a long import in parentheses over several lines (common.smk's
    ``from avsrobust import (...)``): every name in it is part of the closure."""
    sources = dict(snakemake_process_sources())
    modules = closure(sources["common.smk"]).modules
    for name in ("active_run", "layout", "snakemake_dag", "snakemake_scheduling"):
        assert f"avsrobust.{name}" in modules, sorted(modules)
