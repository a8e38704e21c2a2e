"""The DAG-building changes of avsrobust.snakemake_dag, on the pinned Snakemake."""

from __future__ import annotations

import atexit
import gc
import inspect

import pytest
import snakemake.common as common
import snakemake.rules as rules
from snakemake.common import get_input_function_aux_params, overwrite_function_params

from avsrobust import snakemake_dag


def test_install_patches_the_pinned_snakemake_once():
    assert snakemake_dag.install() is True
    callbacks = atexit._ncallbacks()
    assert snakemake_dag.install() is True  # idempotent: no second exit hook
    assert atexit._ncallbacks() == callbacks
    assert common.get_function_params is snakemake_dag._get_function_params
    assert rules.get_function_params is snakemake_dag._get_function_params
    assert all(
        now >= ours
        for now, ours in zip(gc.get_threshold(), snakemake_dag.GC_THRESHOLDS, strict=True)
    )


def test_a_functions_signature_is_computed_once(monkeypatch):
    snakemake_dag.install()
    calls = []
    real = inspect.signature

    def counting(func):
        calls.append(func)
        return real(func)

    monkeypatch.setattr(snakemake_dag.inspect, "signature", counting)

    def input_function(wildcards, input, threads):
        return []

    for _ in range(5):  # as Snakemake does for every job of a rule
        params = common.get_function_params(input_function)
        aux = get_input_function_aux_params(input_function, {"input": 1, "output": 2, "threads": 3})
    assert list(params) == ["wildcards", "input", "threads"]
    assert aux == {"input": 1, "threads": 3}
    assert calls == [input_function]


def test_snakemakes_own_override_still_wins_over_the_cache():
    snakemake_dag.install()

    def func(*args):
        return args

    assert list(common.get_function_params(func)) == ["args"]
    overwrite_function_params(func, ["wildcards", "input"])  # set after the first call
    assert common.get_function_params(func) == ["wildcards", "input"]


def test_an_unhashable_callable_is_answered_without_the_cache():
    snakemake_dag.install()

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, wildcards, output):
            return output

    assert list(common.get_function_params(Unhashable())) == ["wildcards", "output"]


def _evaluators():
    from snakemake.resources import Resource

    snakemake_dag.install()
    ours = Resource.cli_evaluator
    assert ours._avsrobust is True
    return ours, ours.__wrapped__


class SizedInput(list):
    """A job's input as resource expressions see it (``input.size_mb``)."""

    def __init__(self, size_mb: float) -> None:
        super().__init__()
        self.size_mb = size_mb


class MissingInput(list):
    """An input file that is not there yet: its size cannot be known (dry-run)."""

    def __init__(self) -> None:
        super().__init__(["results/x.wav"])

    @property
    def size_mb(self) -> float:
        raise FileNotFoundError(2, "No such file or directory", "results/x.wav")


def test_resource_expressions_evaluate_as_snakemake_evaluates_them(monkeypatch):
    from snakemake.common.tbdstring import TBDString

    ours, theirs = _evaluators()
    monkeypatch.setenv("AVSROBUST_TEST_MEM", "512")
    cases = [
        "min(max(2*input.size_mb, 1000), 8000)",  # Snakemake's default mem_mb
        "max(2*input.size_mb, 1000)",  # disk_mb
        "system_tmpdir",  # tmpdir
        "  attempt * 2000",  # leading blanks, as eval() strips them
        "threads * 100",
        "n1-standard-4",  # a plain string (NameError): returned as given
        "gpu:a100 x",  # not Python at all (SyntaxError): returned as given
        "$AVSROBUST_TEST_MEM",  # environment variables are expanded first
        "'--nice=100'",
        "wildcards.split",
    ]
    wildcards = types_wildcards(split="train")
    for size in (0.0, 900.5, 10_000.0):
        for expr in cases:
            for threads in (None, 4):
                kwargs = dict(
                    wildcards=wildcards,
                    input=SizedInput(size),
                    attempt=2,
                    threads=threads,
                    async_run=None,
                )
                try:
                    expected = theirs("mem_mb", expr, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the same error must come back
                    expected = ("raised", type(exc).__name__)
                try:
                    got = ours("mem_mb", expr, **kwargs)
                except Exception as exc:  # noqa: BLE001
                    got = ("raised", type(exc).__name__)
                assert got == expected, (expr, size, threads)
    # the error paths are Snakemake's: a missing input is "to be determined" ...
    missing = dict(wildcards=wildcards, input=MissingInput(), attempt=1, async_run=None)
    assert isinstance(ours("mem_mb", "2*input.size_mb", **missing), TBDString)
    # ... and a failing expression names itself, as Snakemake's error does
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError, match="1/0"):
        ours("mem_mb", "1/0", **missing)


def types_wildcards(**values):
    import types

    return types.SimpleNamespace(**values)


def test_each_resource_expression_is_compiled_once(monkeypatch):
    ours, _ = _evaluators()
    compiled = []
    real = compile
    monkeypatch.setattr("builtins.compile", lambda *a, **k: compiled.append(a[0]) or real(*a, **k))
    expr = "max(3*input.size_mb, 1234)"
    for size in (1.0, 1000.0, 2000.0):
        value = ours("mem_mb", expr, wildcards=None, input=SizedInput(size), attempt=1,
                     async_run=None)  # fmt: skip
        assert value == max(3 * size, 1234)
    assert compiled.count(expr) <= 1


def test_listed_file_names_are_snakemakes(tmp_path):
    import snakemake.jobs as jobs
    from snakemake.io import IOFile, pipe, service, temp

    snakemake_dag.install()
    ours = jobs.format_files
    assert ours._avsrobust is True
    theirs = ours.__wrapped__
    files = [
        IOFile("results/a.wav"),
        IOFile(temp("results/tmp.npy")),
        IOFile(pipe("results/fifo")),
        IOFile(service("results/socket")),
        IOFile("results/b c.wav"),
        "a plain string",
    ]
    for kind in ({}, {"as_input": True}, {"as_output": True}):
        expected = theirs(files, **kind)
        got = ours(files, **kind)
        assert got == expected
        assert [type(x) for x in got] == [type(x) for x in expected]
    assert "results/fifo (pipe)" in ours(files, as_output=True)


def test_a_rule_without_conda_gets_no_env_and_its_params_stay_unevaluated():
    import types

    import snakemake.jobs as jobs

    snakemake_dag.install()
    spec = jobs.Job.conda_env_spec.fget
    assert spec._avsrobust is True
    theirs = spec.__wrapped__

    class FakeJob:
        """What conda_env_spec reads of a job; params are counted."""

        def __init__(self, rule: object) -> None:
            self.rule, self._conda_env_spec, self.evaluated = rule, None, 0
            self.wildcards_dict, self.input = {"item": "v"}, []

        @property
        def params(self) -> dict:
            self.evaluated += 1
            return {"settings": 1}

    # a rule without conda: (a run: rule): Snakemake's own answer is None, params or not
    no_env = types.SimpleNamespace(_conda_env=None, _expanded_conda_env=rules._NOT_CACHED)
    no_env.expand_conda_env = lambda *a: rules.Rule.expand_conda_env(no_env, *a)
    job = FakeJob(no_env)
    assert theirs(job) is None and job.evaluated == 1
    job = FakeJob(no_env)
    assert spec(job) is None and job.evaluated == 0
    # a rule with conda: Snakemake's property, params included
    calls = []
    with_env = types.SimpleNamespace(
        _conda_env="../envs/audio.yaml",
        expand_conda_env=lambda w, params, i: calls.append(params) or "env-spec",
    )
    job = FakeJob(with_env)
    assert spec(job) == "env-spec" and job.evaluated == 1 and calls == [{"settings": 1}]


def test_path_checks_warn_exactly_as_snakemakes(monkeypatch):
    import logging

    import snakemake.io as io

    snakemake_dag.install()
    ours = io._IOFile.check
    assert ours._avsrobust is True
    theirs = ours.__wrapped__
    warned: list[str] = []

    class Recorder:
        def warning(self, message: str) -> None:
            warned.append(message)

    monkeypatch.setattr(io, "logger", Recorder())
    paths = [
        "results/robust/s4_data/audio_wav_noise/train/dog/-abc_0.wav",  # the usual: no call
        "",
        "./results/a.wav",
        " results/a.wav",
        "results/a.wav ",
        "results/a\nb.wav",
        "results//a.wav",
        "results/{bad-name}.wav",
        "results/{item}.wav",
        "s3://bucket/a.wav",
        ".hidden/a.wav",
    ]
    warning_paths = 0
    for path in paths:
        f = io.IOFile(path)
        warned.clear()
        theirs(f)
        expected = list(warned)
        warned.clear()
        ours(f)
        assert warned == expected, path
        warning_paths += bool(expected)
    assert warning_paths >= 6  # the fast path let none of them through
    # item 8: log records without caller frame, thread and process
    assert logging._srcfile is None
    assert not (logging.logThreads or logging.logProcesses or logging.logMultiprocessing)
