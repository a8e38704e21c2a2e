"""Three costs of building and leaving a DAG of ~16,000 jobs in Snakemake's process, removed.

Found with py-spy on ``snakemake -n`` of the full-size tree (4,932 S4 + 424 MS3 videos,
three negative types, 16,131 jobs; issue 9, README "Performance"). None changes which jobs
exist, what they read or write, or what is printed.

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

:func:`install` applies them for the pinned Snakemake (9.x, requirements.txt), and only when
the code it replaces is the code it was written against; otherwise it changes nothing.
"""

from __future__ import annotations

import atexit
import gc
import inspect
from collections.abc import Callable, Mapping
from typing import Any

#: CPython's generation thresholds while Snakemake runs (the defaults are 700, 10, 10).
GC_THRESHOLDS = (20000, 20, 20)

_params: dict[Callable[..., Any], Mapping[str, inspect.Parameter]] = {}
#: snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR, read by install() (not imported per call:
#: _get_function_params runs for every callable of every job)
_OVERWRITE_ATTR = ""
_installed = False


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


def install() -> bool:
    """Apply the three changes (idempotent); False when this Snakemake is not the one they
    fit (then nothing is changed)."""
    global _installed, _OVERWRITE_ATTR
    try:
        import snakemake
        import snakemake.common as common
        import snakemake.rules as rules
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
    if not _installed:
        gc.set_threshold(
            *(max(now, ours) for now, ours in zip(gc.get_threshold(), GC_THRESHOLDS, strict=True))
        )
        atexit.register(gc.freeze)
        _installed = True
    return True
