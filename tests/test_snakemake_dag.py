"""The DAG-building changes of avsrobust.snakemake_dag, on the pinned Snakemake."""

from __future__ import annotations

import atexit
import gc
import inspect

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
