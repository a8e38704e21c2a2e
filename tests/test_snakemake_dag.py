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


def _job_block_calls(handlers, *, checkpoint=False, logger_filters=()):
    """How often Job.log_info's block is built with these handlers on Snakemake's logger."""
    import logging
    from types import SimpleNamespace

    import snakemake.logging as smlogging

    built = []
    log_info = snakemake_dag._log_info(lambda job, *a, **k: built.append(job))
    logger = smlogging.logger
    saved = logger.handlers[:], logger.filters[:], logger.propagate
    root = logging.getLogger()
    saved_root = root.handlers[:]
    try:
        logger.handlers[:] = handlers
        logger.filters[:] = list(logger_filters)
        logger.propagate = True
        root.handlers[:] = []
        log_info(SimpleNamespace(rule=SimpleNamespace(is_checkpoint=checkpoint)))
    finally:
        logger.handlers[:], logger.filters[:], logger.propagate = saved
        root.handlers[:] = saved_root
    return len(built)


def _handler(quiet=None, level=None, own_filter=True):
    import logging
    import logging.handlers
    import queue

    import snakemake.logging as smlogging

    handler = logging.handlers.QueueHandler(queue.Queue())
    if own_filter:
        handler.addFilter(smlogging.DefaultFilter(quiet, False, False, False, True))
    if level is not None:
        handler.setLevel(level)
    return handler


def test_job_blocks_are_built_unless_every_handler_drops_them():
    import logging

    from snakemake.settings.enums import Quietness

    snakemake_dag.install()
    quiet = {Quietness.RULES}
    assert _job_block_calls([_handler(quiet)]) == 0  # --quiet rules: console
    assert _job_block_calls([_handler(quiet), _handler(quiet)]) == 0  # and log file
    assert _job_block_calls([_handler(quiet), _handler(level=logging.WARNING, quiet=set())]) == 0
    assert _job_block_calls([_handler(set())]) == 1  # not quiet: printed
    assert _job_block_calls([_handler({Quietness.PROGRESS})]) == 1
    # a handler without Snakemake's filter (a logger plugin's queue) still gets every block
    assert _job_block_calls([_handler(quiet), _handler(own_filter=False)]) == 1
    assert _job_block_calls([]) == 1  # no handler at all: Snakemake decides
    assert _job_block_calls([_handler(quiet)], checkpoint=True) == 1
    assert _job_block_calls([_handler(quiet)], logger_filters=[logging.Filter()]) == 1


def test_the_record_our_probe_stands_for_is_dropped_by_snakemakes_own_filter():
    """The probe decides for the records log_info makes: a real Job.log_info record of a
    quiet run reaches no handler (the check is on Snakemake's record, not our probe)."""
    import logging

    import snakemake.logging as smlogging
    from snakemake.settings.enums import Quietness

    LogEvent = smlogging.LogEvent
    snakemake_dag.install()
    flt = smlogging.DefaultFilter({Quietness.RULES}, False, False, False, True)
    for event in (LogEvent.JOB_INFO, LogEvent.SHELLCMD):
        record = logging.LogRecord("snakemake", logging.INFO, "", 0, "Rule: a", None, None)
        record.event = event
        assert not flt.filter(record)
    done = logging.LogRecord("snakemake", logging.INFO, "", 0, "Finished", None, None)
    done.event = LogEvent.JOB_FINISHED
    assert flt.filter(done)  # what --quiet rules still prints


def _iofile(path, active=False):
    from types import SimpleNamespace

    import snakemake.io as io

    f = io.IOFile(str(path))
    # what checksum() reads of the job's rule: whether Snakemake's own cache is on
    f.rule = SimpleNamespace(
        workflow=SimpleNamespace(iocache=SimpleNamespace(active=active, checksum={}))
    )
    return f


def test_input_checksums_are_snakemakes_for_every_kind_of_path(tmp_path, monkeypatch):
    import asyncio
    import os

    import snakemake.io as io

    snakemake_dag.install()
    monkeypatch.setattr(snakemake_dag, "RACY_SECONDS", 0.0)  # answers from the cache too
    ours = io._IOFile.checksum
    assert ours._avsrobust is True
    theirs = ours.__wrapped__
    (tmp_path / "small.wav").write_bytes(b"RIFF" + bytes(range(256)) * 10)
    (tmp_path / "empty.tsv").write_bytes(b"")
    (tmp_path / "big.npy").write_bytes(b"x" * 5000)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "pipe")
    for name in ("small.wav", "empty.tsv", "big.npy", "dir", "missing.wav", "pipe"):
        path = tmp_path / name
        for threshold in (4096, 1_000_000):
            f = _iofile(path)
            expected = asyncio.run(theirs(f, threshold))
            assert asyncio.run(ours(_iofile(path), threshold)) == expected, (name, threshold)
            assert asyncio.run(ours(_iofile(path), threshold)) == expected, (name, threshold)
    assert asyncio.run(ours(_iofile(tmp_path / "big.npy"), 4096)) is None
    assert asyncio.run(ours(_iofile(tmp_path / "small.wav"), 4096)).startswith("sha256:")


def test_each_version_of_an_input_is_hashed_once(tmp_path, monkeypatch):
    import asyncio
    import hashlib
    import os

    import snakemake.io as io

    snakemake_dag.install()
    hashed = []
    real = hashlib.file_digest

    def counting(handle, algorithm):
        hashed.append(handle.name)
        return real(handle, algorithm)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    checksum = io._IOFile.checksum
    theirs = checksum.__wrapped__
    monkeypatch.setattr(snakemake_dag, "RACY_SECONDS", 0.0)
    plan = tmp_path / "offscreen_plan.tsv"
    plan.write_text("video\tdonor\nabc\tdef\n")
    first = [asyncio.run(checksum(_iofile(plan), 1_000_000)) for _ in range(5)]
    assert len(set(first)) == 1 and len(hashed) == 1  # five jobs read it, one read to hash
    # the same size, other bytes, the old modification time put back: the change time moved
    mtime = os.stat(plan).st_mtime_ns
    plan.write_text("video\tdonor\nabc\txyz\n")
    os.utime(plan, ns=(mtime, mtime))
    second = asyncio.run(checksum(_iofile(plan), 1_000_000))
    assert second != first[0]
    assert second == asyncio.run(theirs(_iofile(plan), 1_000_000))
    # with the real margin, a file written just now keeps no checksum: a rewrite within
    # the timestamps' resolution could look the same
    monkeypatch.setattr(snakemake_dag, "RACY_SECONDS", 2.0)
    fresh = tmp_path / "fresh.wav"
    fresh.write_bytes(b"RIFF0000")
    hashed.clear()
    for _ in range(3):
        asyncio.run(checksum(_iofile(fresh), 1_000_000))
    assert len(hashed) == 3
    # while Snakemake's own cache is on (the DAG is being built), and for an algorithm or
    # force, Snakemake answers
    asked = []

    async def snakemakes(f, threshold=None, force=False, algorithm=None):
        asked.append((threshold, force, algorithm))
        return "theirs"

    ours = snakemake_dag._checksum(snakemakes)
    assert asyncio.run(ours(_iofile(plan, active=True), 1_000_000)) == "theirs"
    assert asyncio.run(ours(_iofile(plan), force=True)) == "theirs"
    assert asyncio.run(ours(_iofile(plan), 1_000_000, algorithm="md5")) == "theirs"
    assert asyncio.run(ours(_iofile(plan), 1_000_000)).startswith("sha256:")
    assert len(asked) == 3
