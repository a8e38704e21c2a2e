"""Ten costs of building, listing, running and leaving a DAG of ~16,000 jobs in Snakemake's
process, removed.

Items 1-8 were found with py-spy on ``snakemake -n`` of the full-size tree (4,932 S4 + 424
MS3 videos, three negative types, 16,131 jobs; issue 9), items 9-10 with py-spy and perf on
Snakemake's process building S4 negative audio (issue 11; README "Performance"). None
changes which jobs exist, what they read or write, or what is printed or recorded.

1. Function signatures. For every job and every callable input, param or resource,
   Snakemake asks ``inspect.signature`` which arguments the function takes (twice per call:
   ``Rule.apply_input_function`` and ``get_input_function_aux_params``). The answer is the
   same for the same function object, but ``inspect.signature`` rebuilds it each time:
   11% of the dry-run's samples. :func:`_get_function_params` asks once per function.
   Snakemake's own override (``overwrite_function_params``, an attribute set on the
   function) is still looked at first, on every call.
2. The cyclic garbage collector. Building the DAG allocates millions of long-lived objects
   (jobs, IOFiles, Namedlists) and no garbage cycles to speak of; with CPython's default
   first-generation threshold (700 allocations) the collector runs thousands of times and
   its older generations rescan the growing heap. :data:`GC_THRESHOLDS` lets it run ~30x
   less often (it still runs, so real cycles are still freed). Measured: -3.8 CPU s of 33.
3. Interpreter exit. At exit CPython runs one more full collection over everything still
   alive (the whole DAG): ~3 s after the last line was printed. An ``atexit`` hook freezes
   the heap first (``gc.freeze``: the final collection skips it). ``atexit`` runs the hook
   before the earlier-registered ``logging.shutdown``, so logs are still flushed and
   closed; only objects already unreachable in cycles at exit are left to the OS.
4. Resource expressions. Each job's default resources (``mem_mb``, ``disk_mb``, ``tmpdir``:
   Python expressions given as strings) are evaluated by ``Resource.cli_evaluator``, which
   compiles the string and rebuilds its namespace of helper functions on every call
   (~20 us each, three per job). :func:`_cli_evaluator` compiles each expression once and
   copies a namespace built once; anything but a clean result (a plain string such as
   ``n1-standard-4``, a missing input, an error) is handed to Snakemake's own evaluator.
5. File names in the job listing. ``format_files`` asks about ten flags of every file it
   prints (storage, pipe, service, ...: ~10 us a file, 250,000 files in the full-size
   listing). A file without any flag prints as its plain name; :func:`_format_files`
   prints such files directly and asks Snakemake about the others.
6. Params for the conda env. To collect the conda envs to create, Snakemake asks every job
   for its env, and ``Job.conda_env_spec`` evaluates the job's params first (an env may be
   a function of them): every per-clip job's params function, for rules that have no
   ``conda:`` at all (``run:`` rules cannot; 4.5% of the dry-run's samples). For such a rule
   Snakemake's answer is ``None`` whatever the params; :func:`_conda_env_spec` answers that
   without them (a job still evaluates its params when it runs).
7. Path checks. Every input path of every job (~120,000 at full size: the check jobs
   declare every frame and mask) goes through ``snakemake.io.check``, which formats a
   "rule ..., line ..." prefix and runs two regular expressions before it finds nothing to
   warn about (3% of the samples). :func:`_check` lets through, without the call, a path
   none of its warnings can apply to (non-empty; no ``//``, line break or brace; not
   starting with ``./`` or a blank, not ending with a blank) and asks Snakemake about
   every other one.
8. Log records. Each of the ~16,000 job blocks of the listing is a log record, and
   ``logging`` looks up the caller's frame, thread and process for each (findCaller and
   makeRecord: 2.4% of the samples); no Snakemake log output (nor this project's job logs)
   prints them. They are turned off with ``logging``'s documented switches
   (``logging._srcfile``, ``logThreads``, ``logProcesses``, ``logMultiprocessing``; the
   "Optimization" section of the Python logging HOWTO), in Snakemake's process only.
9. Job blocks nobody prints. Before a job starts, ``Job.log_info`` builds its block (file
   lists, reason, resources: ~0.3 ms, 11% of the main thread's GIL-holding samples when it
   runs thousands of in-process clip jobs) and logs it; with ``--quiet rules`` every
   handler's filter then drops it. :func:`_log_info` skips building it when every handler
   of Snakemake's logger would drop both of its records: each handler carries Snakemake's
   own ``DefaultFilter`` that rejects them (or a level above INFO). A handler of any other
   kind (a logger plugin's queue, a filter of its own) gets the block as before.
10. Input checksums. When a job finishes, Snakemake records the SHA-256 of each input under
   1 MB in the job's metadata, reading the file again: at full size the per-dataset donor
   plan (~375 KB) once for every off-screen clip, each positive WAV once per negative type
   (~4 GB read and hashed). Its own cache of checksums is used only while the DAG is built.
   :func:`_checksum` hashes each version of a file once: it keeps the checksum with the
   file's device, inode, size, modification and change times (``os.stat``; the change time
   moves on every write and cannot be set back) and hashes again when any of them differs.
   As git's index does against "racy" timestamps, a file modified less than
   :data:`RACY_SECONDS` before it was hashed is not kept (a rewrite within the
   timestamps' resolution could leave them unchanged). Storage files, directories, pipes,
   missing files and calls with an algorithm or ``force`` go to Snakemake's own code.

:func:`install` applies them for the pinned Snakemake (9.x, requirements.txt), and only when
the code it replaces is the code it was written against; otherwise it changes nothing.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import inspect
import logging
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

#: CPython's generation thresholds while Snakemake runs (the defaults are 700, 10, 10).
GC_THRESHOLDS = (20000, 20, 20)

_params: dict[Callable[..., Any], Mapping[str, inspect.Parameter]] = {}
#: snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR, read by install() (not imported per call:
#: _get_function_params runs for every callable of every job)
_OVERWRITE_ATTR = ""
_installed = False
#: a file modified less than this long before it was hashed keeps no checksum (item 10)
RACY_SECONDS = 2.0
#: path -> ((device, inode, size, mtime, ctime), "sha256:<hex>") of the files hashed (item 10)
_checksums: dict[str, tuple[tuple[int, ...], str]] = {}


def _get_function_params(func: Callable[..., Any]) -> Mapping[str, Any]:
    """``snakemake.common.get_function_params``, each function's signature computed once.

    The cache holds each function asked about (the rules' input functions and resource
    callables: a few dozen per rule), keyed by the function itself, so it never answers for
    a function that has gone.
    """
    if hasattr(func, _OVERWRITE_ATTR):
        return getattr(func, _OVERWRITE_ATTR)
    try:
        return _params[func]
    except KeyError:
        params = _params[func] = inspect.signature(func).parameters
        return params
    except TypeError:  # an unhashable callable: no cache
        return inspect.signature(func).parameters


_EXPRESSIONS: dict[str, Any] = {}
#: the helper functions Snakemake puts into every resource expression's namespace
_NAMESPACE: dict[str, Any] = {}


def _cli_evaluator(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Resource.cli_evaluator``, each expression compiled once (see item 4)."""
    import tempfile

    import snakemake.ioutils

    snakemake.ioutils.register_in_globals(_NAMESPACE)
    if not _NAMESPACE:
        raise RuntimeError("snakemake.ioutils.register_in_globals registered nothing")

    def cli_evaluator(
        name: str,
        val: str,
        *,
        wildcards: Any,
        input: Any,
        attempt: int,
        threads: int | None = None,
        async_run: Callable[..., Any],
    ) -> Any:
        def theirs() -> Any:
            return original(
                name,
                val,
                wildcards=wildcards,
                input=input,
                attempt=attempt,
                threads=threads,
                async_run=async_run,
            )

        expr = os.path.expanduser(os.path.expandvars(val))
        try:
            code = _EXPRESSIONS[expr]
        except KeyError:
            try:  # as eval() of a string: leading blanks and tabs are stripped
                code = compile(expr.lstrip(" \t"), "<string>", "eval")
            except SyntaxError:
                code = None
            _EXPRESSIONS[expr] = code
        if code is None:
            return theirs()
        namespace = dict(_NAMESPACE)
        namespace.update(
            {
                "wildcards": wildcards,
                "input": input,
                "attempt": attempt,
                "system_tmpdir": tempfile.gettempdir(),
                "shutil": shutil,
                "async_run": async_run,
                **({"threads": threads} if threads is not None else {}),
            }
        )
        try:
            return eval(code, namespace)  # noqa: S307 - Snakemake's own resource expression
        except BaseException:  # noqa: BLE001 - Snakemake's evaluator decides what it means
            return theirs()

    cli_evaluator._avsrobust = True  # type: ignore[attr-defined]
    cli_evaluator.__wrapped__ = original  # type: ignore[attr-defined]
    return cli_evaluator


def _format_files(original: Callable[..., list[str]], iofile: type) -> Callable[..., list[str]]:
    """``snakemake.jobs.format_files``, unflagged files printed as their names (item 5)."""

    def format_files(io: Any, as_input: bool = False, as_output: bool = False) -> list[str]:
        out = []
        for f in io:
            if type(f) is iofile and not f.flags:
                out.append(f"{f}")
            else:
                out.extend(original((f,), as_input=as_input, as_output=as_output))
        return out

    format_files._avsrobust = True  # type: ignore[attr-defined]
    format_files.__wrapped__ = original  # type: ignore[attr-defined]
    return format_files


def _conda_env_spec(original: property) -> property:
    """``Job.conda_env_spec``, ``None`` without evaluating params for a rule with no
    ``conda:`` (item 6), as ``Rule.expand_conda_env`` answers for one."""

    def conda_env_spec(self: Any) -> Any:
        if self.rule._conda_env is None:
            return None
        return original.fget(self)

    conda_env_spec._avsrobust = True  # type: ignore[attr-defined]
    conda_env_spec.__wrapped__ = original.fget  # type: ignore[attr-defined]
    return property(conda_env_spec, doc=original.__doc__)


def _check(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_IOFile.check``: no call for a path none of the warnings can apply to (item 7)."""

    def check(self: Any) -> None:
        f = self._file
        if (
            isinstance(f, str)
            and f
            and "//" not in f
            and "\n" not in f
            and "{" not in f
            and "}" not in f
            and not f.startswith(("./", " "))
            and not f.endswith(" ")
        ):
            return
        original(self)

    check._avsrobust = True  # type: ignore[attr-defined]
    check.__wrapped__ = original  # type: ignore[attr-defined]
    return check


def _log_info(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Job.log_info``, not built when Snakemake's logger would drop it (item 9)."""
    from snakemake.logging import DefaultFilter, LogEvent, logger

    def probe(event: Any) -> logging.LogRecord:
        record = logging.LogRecord("snakemake", logging.INFO, __file__, 0, "", None, None)
        record.event = event
        return record

    # the two records log_info logs, made once: the filters only read them
    probes = [probe(LogEvent.JOB_INFO), probe(LogEvent.SHELLCMD)]

    def dropped(probe: logging.LogRecord) -> bool:
        # as Logger.callHandlers walks them: this logger's handlers, then its parents'
        log = logger
        handlers = 0
        while log is not None:
            if log.filters:
                return False
            for handler in log.handlers:
                handlers += 1
                if probe.levelno >= handler.level and not any(
                    type(f) is DefaultFilter and not f.filter(probe) for f in handler.filters
                ):
                    return False
            log = log.parent if log.propagate else None
        return handlers > 0

    def log_info(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.rule.is_checkpoint and all(dropped(p) for p in probes):
            return None
        return original(self, *args, **kwargs)

    log_info._avsrobust = True  # type: ignore[attr-defined]
    log_info.__wrapped__ = original  # type: ignore[attr-defined]
    return log_info


def _checksum(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_IOFile.checksum``, each version of a local file hashed once (item 10)."""

    async def checksum(
        self: Any, threshold: int | None = None, force: bool = False, algorithm: Any = None
    ) -> str | None:
        def theirs() -> Any:
            return original(self, threshold, force, algorithm)

        if (
            force
            or algorithm is not None
            or threshold is None
            or self.is_storage
            or self.rule is None
            or self.rule.workflow.iocache.active
        ):
            return await theirs()
        path = self.file
        try:
            st = os.stat(path)
        except OSError:  # missing, a broken link: Snakemake's answer (or error)
            return await theirs()
        if not stat.S_ISREG(st.st_mode):
            return await theirs()
        if st.st_size > threshold:
            return None
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _checksums.get(path)
        if known is not None and known[0] == version:
            return known[1]
        started = time.time_ns()
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, hashlib.sha256)
        value = f"{digest.name}:{digest.hexdigest()}"
        if max(st.st_mtime_ns, st.st_ctime_ns) < started - int(RACY_SECONDS * 1e9):
            _checksums[path] = (version, value)
        return value

    checksum._avsrobust = True  # type: ignore[attr-defined]
    checksum.__wrapped__ = original  # type: ignore[attr-defined]
    return checksum


def install() -> bool:
    """Apply the ten changes (idempotent); False when this Snakemake is not the one they
    fit (then nothing is changed)."""
    global _installed, _OVERWRITE_ATTR
    try:
        import snakemake
        import snakemake.common as common
        import snakemake.io.fmt  # noqa: F401 - read through sys.modules below
        import snakemake.jobs as jobs
        import snakemake.rules as rules
        from snakemake.resources import Resource
    except ImportError:
        return False
    if not snakemake.__version__.startswith("9."):
        return False
    original = common.get_function_params
    if original is not _get_function_params:
        code = getattr(original, "__code__", None)
        if (
            code is None
            or "signature" not in code.co_names
            or "FUNC_OVERWRITE_PARAMS_ATTR" not in code.co_names
            or getattr(rules, "get_function_params", None) is not original
        ):
            return False
        _OVERWRITE_ATTR = common.FUNC_OVERWRITE_PARAMS_ATTR
        # Both names are looked up at call time: snakemake.common's own (used by
        # get_input_function_aux_params) and the one rules.py imported.
        common.get_function_params = _get_function_params
        rules.get_function_params = _get_function_params
    if not getattr(Resource.cli_evaluator, "_avsrobust", False):
        names = Resource.cli_evaluator.__code__.co_names
        if {"register_in_globals", "eval", "expandvars"} <= set(names):
            Resource.cli_evaluator = staticmethod(_cli_evaluator(Resource.cli_evaluator))
    if not getattr(jobs.format_files, "_avsrobust", False):
        fmt = sys.modules["snakemake.io.fmt"]
        if jobs.fmt_iofile is fmt.fmt_iofile and "_IOFile" in fmt.fmt_iofile.__code__.co_names:
            jobs.format_files = _format_files(jobs.format_files, fmt._IOFile)
    spec = jobs.Job.conda_env_spec
    if not getattr(spec.fget, "_avsrobust", False):
        expand = rules.Rule.expand_conda_env.__code__
        if {"expand_conda_env", "params"} <= set(spec.fget.__code__.co_names) and (
            "_conda_env" in expand.co_names and "_expanded_conda_env" in expand.co_names
        ):
            jobs.Job.conda_env_spec = _conda_env_spec(spec)
    iofile = snakemake.io._IOFile
    if not getattr(iofile.check, "_avsrobust", False):
        warnings = {"startswith", "endswith", "_double_slash_regex", "_illegal_wildcard_name_regex"}
        checked = set(snakemake.io.check.__code__.co_names)
        if warnings <= checked and "check" in iofile.check.__code__.co_names:
            iofile.check = _check(iofile.check)
    log_info = jobs.Job.log_info
    if not getattr(log_info, "_avsrobust", False):
        import snakemake.logging as smlogging

        names = set(log_info.__code__.co_names)
        # the events log_info logs, and the filter that maps them to Quietness.RULES
        if {"JOB_INFO", "SHELLCMD", "info"} <= names and {"RULES", "JOB_INFO", "SHELLCMD"} <= (
            set(smlogging.DefaultFilter.filter.__code__.co_names)
        ):
            jobs.Job.log_info = _log_info(log_info)
    if not getattr(iofile.checksum, "_avsrobust", False):
        names = set(iofile.checksum.__code__.co_names)
        if {"file_digest", "sha256", "iocache", "is_checksum_eligible"} <= names:
            iofile.checksum = _checksum(iofile.checksum)
    if not _installed:
        # item 8: what Snakemake's log records need not carry
        logging._srcfile = None
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        gc.set_threshold(
            *(max(now, ours) for now, ours in zip(gc.get_threshold(), GC_THRESHOLDS, strict=True))
        )
        atexit.register(gc.freeze)
        _installed = True
    return True
