"""What each rule's code imports, read from the source (no import runs).

Shared by tests/test_envs.py (every import is provided by the rule's env file) and
.ci/env_venvs.py (CI imports the same modules inside a venv built from each env file).

A rule's *closure* starts at its ``script:`` (or, for the code Snakemake runs in its own
process: the ``.smk`` files' Python, ``run:`` blocks included) and follows every
``avsrobust`` module it imports, transitively. Every ``import`` statement counts, at module
level or inside a function (a function-level ``import torch`` fails the job just the same
when the function runs).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "workflow_scripts"
PACKAGE = "avsrobust"
#: the env of Snakemake's own process (``run:`` jobs and the .smk files' Python)
SNAKEMAKE_ENV = "envs/workflow.yaml"
_RULE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)\s+(?P<name>\w+)\s*:", re.M)
_DIRECTIVE = r'^[ \t]+{}:\s*\n[ \t]+"(?P<value>[^"]+)"'


@dataclass(frozen=True)
class Rule:
    name: str
    smk: Path
    conda: Path | None  # the env file, resolved
    script: Path | None  # the script, resolved
    run: bool  # a run: block (executes in Snakemake's process)
    local: bool  # listed in localrules (runs in Snakemake's process, no env)


def _localrules(text: str) -> set[str]:
    names: set[str] = set()
    for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\w+,?\s*\n)+)", text, re.M):
        names |= set(re.findall(r"\w+", block))
    return names


def rules() -> list[Rule]:
    """Every rule of the workflow (Snakefile and rules/*.smk), from the source text."""
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    local = set().union(*(_localrules(f.read_text()) for f in files))
    out = []
    for smk in files:
        text = smk.read_text()
        starts = list(_RULE.finditer(text))
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            block = text[m.start() : end]
            conda = re.search(_DIRECTIVE.format("conda"), block, re.M)
            script = re.search(_DIRECTIVE.format("script"), block, re.M)
            out.append(
                Rule(
                    name=m["name"],
                    smk=smk,
                    conda=(smk.parent / conda["value"]).resolve() if conda else None,
                    script=(smk.parent / script["value"]).resolve() if script else None,
                    run=re.search(r"^[ \t]+run:\s*$", block, re.M) is not None,
                    local=m["name"] in local,
                )
            )
    return out


def snakemake_process_sources() -> list[tuple[str, str]]:
    """(name, Python source) of the code Snakemake itself runs: every import line of the
    Snakefile and rules/*.smk (parse-time imports, run: blocks)."""
    out = []
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        statements, current = [], None
        for line in smk.read_text().splitlines():
            code = line.split("#")[0].strip()
            if current is None and re.match(r"(from\s+[\w.]+\s+import[\s(]|import\s)", code):
                current = [code]
            elif current is not None:  # a parenthesised import continues (snakefmt's wrap)
                current.append(code)
            if current is not None and "".join(current).count("(") == "".join(current).count(")"):
                statements.append(" ".join(current))
                current = None
        out.append((smk.name, "\n".join(statements)))
    return out


def _module_file(module: str) -> Path | None:
    """The source file of an ``avsrobust`` module (package ``__init__`` or module)."""
    rel = Path(*module.split("."))
    for cand in (PACKAGE_ROOT / rel / "__init__.py", PACKAGE_ROOT / rel.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _imports(source: str, module: str | None, is_package: bool) -> set[str]:
    """Absolute names of every module an import statement in ``source`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module
                assert module is not None, "relative import outside the package"
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            # "from avsrobust import layout": layout may be a module of its own
            names |= {f"{target}.{a.name}" for a in node.names if a.name != "*"}
    return names


@dataclass(frozen=True)
class Closure:
    modules: frozenset[str]  # avsrobust modules (dotted)
    third_party: frozenset[str]  # top-level names of other non-stdlib modules

    def distributions(self) -> frozenset[str]:
        return frozenset(distribution_of(m) for m in self.third_party)


def closure(source: str, module: str | None = None, is_package: bool = False) -> Closure:
    """The import closure of a piece of code (a script, or an avsrobust module)."""
    seen: set[str] = set()
    third: set[str] = set()
    todo = [(source, module, is_package)]
    while todo:
        src, mod, pkg = todo.pop()
        for name in _imports(src, mod, pkg):
            top = name.split(".")[0]
            if top == PACKAGE:
                path = _module_file(name)
                if path is None or name in seen:
                    continue  # a name imported from a module, not a module
                seen.add(name)
                # importing a.b.c runs a/__init__.py and a/b/__init__.py first
                parents = name.split(".")
                for i in range(1, len(parents)):
                    parent = ".".join(parents[:i])
                    if parent not in seen and _module_file(parent) is not None:
                        seen.add(parent)
                        todo.append((_module_file(parent).read_text(), parent, True))
                todo.append((path.read_text(), name, path.name == "__init__.py"))
            elif top and top not in sys.stdlib_module_names:
                third.add(top)
    return Closure(frozenset(seen), frozenset(third))


def script_closure(path: Path) -> Closure:
    return closure(path.read_text())


def canonical(name: str) -> str:
    """PyPI's normalised distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _top_level_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(top_level: str) -> str:
    """The installed distribution that provides an importable top-level name (``PIL`` ->
    ``pillow``); the name itself when none does (it will then be missing from any env)."""
    dists = _top_level_distributions().get(top_level)
    return canonical(dists[0]) if dists else canonical(top_level)


def env_pip(env_file: Path) -> dict[str, str]:
    """``{distribution: version}`` of an env file's pip list."""
    env = yaml.safe_load(env_file.read_text())
    pins: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                name, _, version = line.partition("==")
                pins[canonical(name)] = version
    return pins


def rule_closures() -> list[tuple[str, Path, Closure]]:
    """(what, env file, closure) of every piece of code the workflow runs in an env:
    each rule with ``conda:`` and ``script:``, and Snakemake's own process."""
    out = [
        (f"rule {r.name} ({r.script.name})", r.conda, script_closure(r.script))
        for r in rules()
        if r.conda is not None and r.script is not None
    ]
    for name, source in snakemake_process_sources():
        out.append((f"Snakemake's process ({name})", REPO / SNAKEMAKE_ENV, closure(source)))
    return out
