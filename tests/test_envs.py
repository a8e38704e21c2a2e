"""The pins in requirements.txt (the one place) and envs/*.yaml must agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

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
