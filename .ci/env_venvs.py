"""CI: build each envs/*.yaml pip list into its own venv and import every rule's code in it.

Conda cannot solve environments on the build machines, so this is how an env file is
proven: a venv holding exactly that env's pip packages (and what they depend on) must
import the whole import closure of every rule that runs in it (tests/import_closure.py:
the rule's script and every avsrobust module it reaches, function-level imports
included). A package missing from an env file fails here, not in a cluster job.

Venvs live under ``.venvs/<env>`` and are reused while their env file is unchanged (the
copy in ``.venvs/<env>/env.yaml`` is the stamp), so a warm CI run only imports.

How a venv is filled (default): every package of an env file is pinned exactly as in
requirements.txt (tests/test_envs.py), so ``.venv`` already holds those very files. The
env's packages and the dependency closure their metadata declares are linked from
``.venv`` into the venv's site-packages; nothing else of ``.venv`` is visible in it. That
takes seconds, needs no network and never downloads torch's ~5 GB of CUDA wheels again.
``--pip`` instead ``pip install``s the pip list of every env without torch from the package
index (a proof that the list resolves on its own; minutes, and at the mercy of the
network), and links only the torch env.

    .venv/bin/python .ci/env_venvs.py            # build what changed, import everything
    .venv/bin/python .ci/env_venvs.py --rebuild  # build every venv afresh
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "workflow_scripts")]

from import_closure import canonical, env_pip, rule_closures  # noqa: E402

#: with --pip, an env holding any of these is still linked from .venv (~5 GB of wheels)
HEAVY = {"torch", "torchaudio", "torchvision"}
PIP = "pip==25.3"


def run(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def site_packages(venv: Path) -> Path:
    v = sys.version_info
    return venv / "lib" / f"python{v.major}.{v.minor}" / "site-packages"


# ----------------------------------------------------------------------------- linking
def _dependency_closure(pins: dict[str, str]) -> dict[str, metadata.Distribution]:
    """The installed distributions of ``pins`` and everything they require (no extras)."""
    installed = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    out: dict[str, metadata.Distribution] = {}
    todo = list(pins)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        dist = installed.get(name)
        if dist is None:
            raise SystemExit(f"{name} is not installed in .venv: cannot link it")
        if name in pins and dist.version != pins[name]:
            raise SystemExit(f"{name}=={pins[name]} pinned, .venv has {dist.version}")
        out[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return out


def _site_files(dist: metadata.Distribution) -> list[PurePosixPath]:
    """A distribution's files inside site-packages (scripts in bin/ are left out)."""
    files = [PurePosixPath(str(f)) for f in dist.files or ()]
    return [f for f in files if f.parts and f.parts[0] != ".."]


def link_distributions(pins: dict[str, str], dst: Path) -> int:
    """Symlink the pinned distributions and their dependencies from .venv into ``dst``.

    A top-level folder that other distributions share (a namespace package) is entered
    and only the wanted parts are linked. Returns the number of distributions linked.
    """
    wanted = _dependency_closure(pins)
    src = Path(next(iter(wanted.values())).locate_file(""))
    owners: dict[PurePosixPath, set[str]] = defaultdict(set)  # path prefix -> dists
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        for f in _site_files(dist):
            for i in range(1, len(f.parts) + 1):
                owners[PurePosixPath(*f.parts[:i])].add(name)

    def link(prefix: PurePosixPath) -> None:
        if owners[prefix] <= set(wanted) or (src / prefix).is_file():
            target = dst / prefix
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(src / prefix)
            return
        for child in sorted(p for p in owners if p.parent == prefix):
            if owners[child] & set(wanted):
                link(child)

    tops = {PurePosixPath(f.parts[0]) for d in wanted.values() for f in _site_files(d)}
    for top in sorted(tops):
        link(top)
    return len(wanted)


# ----------------------------------------------------------------------------- venvs
def build(env_file: Path, venv: Path, rebuild: bool, use_pip: bool) -> str:
    """Make ``venv`` hold ``env_file``'s pip list; returns what was done."""
    stamp = venv / "env.yaml"
    mode = b"pip" if use_pip else b"link"
    if not rebuild and stamp.is_file() and stamp.read_bytes() == env_file.read_bytes() + mode:
        return "reused"
    shutil.rmtree(venv, ignore_errors=True)
    pins = env_pip(env_file)
    linked = not use_pip or bool(set(pins) & HEAVY)
    run([sys.executable, "-m", "venv", *(["--without-pip"] if linked else []), str(venv)])
    if linked:
        n = link_distributions(pins, site_packages(venv))
        how = f"linked {n} distributions from .venv"
    else:
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        run([*pip, "--disable-pip-version-check", PIP])
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
            handle.write("".join(f"{k}=={v}\n" for k, v in pins.items()))
        try:
            run([*pip, "--disable-pip-version-check", "-r", handle.name])
        finally:
            os.unlink(handle.name)
        how = f"pip installed {len(pins)} pinned packages"
    stamp.write_bytes(env_file.read_bytes() + mode)  # last: a half-built venv is never reused
    return how


CHECK = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report every failure, not the first
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def check_imports(venv: Path, users: dict[str, list[str]]) -> dict[str, str]:
    """Import every module (``module -> rules that need it``) in ``venv``; failures."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO / "workflow_scripts")
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-s", "-c", CHECK, json.dumps(sorted(users))],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        return {"(interpreter)": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO / ".venvs", help="where the venvs live")
    ap.add_argument("--rebuild", action="store_true", help="rebuild even unchanged venvs")
    ap.add_argument("--pip", action="store_true", help="pip install the envs without torch")
    args = ap.parse_args(argv)
    per_env: dict[Path, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for what, env_file, clo in rule_closures():
        for module in sorted(clo.modules | clo.third_party):
            per_env[env_file][module].append(what)
    problems = []
    for env_file in sorted(REPO.glob("envs/*.yaml")):
        t0 = time.perf_counter()
        venv = args.root / env_file.stem
        how = build(env_file, venv, args.rebuild, args.pip)
        t1 = time.perf_counter()
        users = per_env.get(env_file, {})
        failed = check_imports(venv, users)
        t2 = time.perf_counter()
        print(
            f"{env_file.name}: {how} ({t1 - t0:.1f} s); {len(users)} modules of "
            f"{len({w for ws in users.values() for w in ws})} rules imported ({t2 - t1:.1f} s)",
            flush=True,
        )
        for module, error in sorted(failed.items()):
            rules = ", ".join(users.get(module, ["?"]))
            problems.append(f"{env_file.name}: import {module} failed ({error}); needed by {rules}")
    for line in problems:
        print(f"ERROR {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
