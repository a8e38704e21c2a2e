"""The two scheduling-loop changes of avsrobust.snakemake_scheduling, on the pinned Snakemake."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import yaml
from snakemake.scheduling.job_scheduler import JobScheduler

from avsrobust import snakemake_scheduling

REPO = Path(__file__).resolve().parents[1]


class CountingPath:
    """An input path whose exists()/size() calls are counted, as Snakemake's _IOFile."""

    def __init__(self, name: str, size: int | None, calls: list[str]) -> None:
        self.name, self._size, self._calls = name, size, calls

    async def exists(self) -> bool:
        self._calls.append(self.name)
        return self._size is not None

    async def size(self) -> int:
        return self._size

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountingPath) and other.name == self.name


class Job:
    """A ready job: hashes by identity, as Snakemake's jobs do."""

    def __init__(self, inputs: list[CountingPath]) -> None:
        self.input = inputs


def test_install_patches_the_pinned_snakemake_once():
    assert snakemake_scheduling.install() is True
    assert snakemake_scheduling.install() is True  # idempotent: no double wrapping
    assert JobScheduler.update_input_sizes is snakemake_scheduling._update_input_sizes
    init = JobScheduler.__init__
    assert init._avsrobust is True
    assert not getattr(init.__wrapped__, "_avsrobust", False)


def test_each_ready_jobs_inputs_are_statted_once():
    calls: list[str] = []
    a, b, c = (
        CountingPath(n, s, calls)
        for n, s in (
            (
                "a.wav",
                10,
            ),
            ("b.wav", 20),
            ("c", None),
        )
    )
    job1, job2 = Job([a, b]), Job([b, c])
    sched = types.SimpleNamespace(_input_sizes={})
    run = snakemake_scheduling._update_input_sizes

    asyncio.run(run(sched, [job1]))
    assert sched._input_sizes == {a: 10, b: 20}
    assert sorted(calls) == ["a.wav", "b.wav"]

    # the next pass: job1 is still ready, job2 is new; only job2's inputs are looked up
    calls.clear()
    asyncio.run(run(sched, [job1, job2]))
    assert sorted(calls) == ["b.wav", "c"]
    assert sched._input_sizes == {a: 10, b: 20, c: None}

    calls.clear()
    asyncio.run(run(sched, [job1, job2]))
    assert calls == []


def test_only_a_cap_that_limits_nothing_is_dropped():
    class Scheduler:
        def __init__(self, max_jobs: int, timespan: float) -> None:
            self.job_rate_limiter = types.SimpleNamespace(max_jobs=max_jobs, timespan=timespan)

    Scheduler.__init__ = snakemake_scheduling._without_unlimited_rate_limiter(Scheduler.__init__)
    assert Scheduler(100000, 1).job_rate_limiter is None
    assert Scheduler(10000, 1).job_rate_limiter is None
    cluster_cap = Scheduler(10, 1).job_rate_limiter  # e.g. a SLURM profile's 10/1s
    assert (cluster_cap.max_jobs, cluster_cap.timespan) == (10, 1)
    assert Scheduler(100, 1).job_rate_limiter is not None  # Snakemake's own default


def test_the_profiles_caps_are_on_the_intended_side_of_the_threshold():
    def per_second(profile: str) -> float:
        cfg = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
        jobs, span = cfg["max-jobs-per-timespan"].split("/")
        return int(jobs) / float(span.rstrip("s") or 1)

    assert per_second("default") >= snakemake_scheduling.UNLIMITED_JOBS_PER_S
