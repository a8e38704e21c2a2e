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


class InputFile(str):
    """An input path as the greedy reward reads it (Snakemake's _IOFile is a str)."""

    def is_flagged(self, flag: str) -> bool:
        return False


class KnapsackJob:
    """A candidate of the greedy scheduler: its demands and its inputs (with sizes)."""

    def __init__(self, name: str, demands: dict[str, int], inputs: list[str]) -> None:
        self.name, self.scheduler_resources, self.priority = name, demands, 0
        self.input = [InputFile(f) for f in inputs]

    def __repr__(self) -> str:
        return self.name


def _greedy(omit: bool = False, greediness: float = 1.0):
    from snakemake.scheduling.greedy import Scheduler, SchedulerSettings

    sched = Scheduler.__new__(Scheduler)
    sched.settings = SchedulerSettings(
        greediness=greediness, omit_prioritize_by_temp_and_input=omit
    )
    return sched


def test_greedy_selection_makes_snakemakes_picks_on_random_instances():
    import random

    from snakemake.scheduling.greedy import Scheduler

    assert snakemake_scheduling.install() is True
    ours = Scheduler.select_jobs
    assert ours._avsrobust is True
    theirs = ours.__wrapped__
    rng = random.Random(0)
    sched = _greedy()
    differing_inputs = 0
    for trial in range(400):
        n = rng.randint(1, 40)
        jobs, sizes = [], {}
        for j in range(n):
            files = [f"f{trial}_{j}_{k}" for k in range(rng.randint(0, 3))]
            for f in files:
                sizes[f] = rng.choice([None, rng.randint(0, 5)])  # ties on purpose
            demands = {
                "_cores": rng.choice([0, 0, 1, 2]),
                "_nodes": rng.choice([0, 1]),
                "_job_count": 1,
                "mem_mb": rng.choice([0, 1000, 4000]),
            }
            jobs.append(KnapsackJob(f"j{j}", demands, files))
        free = {
            "_cores": rng.randint(0, 6),
            "_nodes": rng.choice([1, 3, 2**31]),
            "_job_count": rng.choice([2**63 - 1, rng.randint(1, 10)]),
            "mem_mb": rng.choice([2000, 8000, 10**9]),
        }
        expected = theirs(sched, jobs, jobs, free, sizes)
        got = ours(sched, jobs, jobs, free, sizes)
        assert got == expected, (trial, free, jobs)
        differing_inputs += 0 < len(expected) < n
    assert differing_inputs > 100  # most instances select some, not all, candidates


def test_greedy_selection_leaves_other_settings_to_snakemake():
    from snakemake.scheduling.greedy import Scheduler

    assert snakemake_scheduling.install() is True
    calls = []
    select = snakemake_scheduling._select_jobs(lambda *args: calls.append(args) or ["theirs"])
    job = KnapsackJob("j", {"_cores": 1, "_job_count": 1}, [])
    free = {"_cores": 2, "_job_count": 5}
    assert select(_greedy(), [job], [job], free, {}) == [job]
    assert calls == []
    for sched in (_greedy(omit=True), _greedy(greediness=0.5)):
        assert select(sched, [job], [job], free, {}) == ["theirs"]
    idle = KnapsackJob("idle", {"_cores": 0, "_job_count": 0}, [])  # demands nothing
    assert select(_greedy(), [idle], [idle], free, {}) == ["theirs"]
    assert len(calls) == 3
    assert Scheduler.select_jobs._avsrobust is True


def test_pipe_inputs_are_answered_as_snakemake_answers_them_and_only_during_prepare():
    from snakemake.jobs import Job as SnakemakeJob

    assert snakemake_scheduling.install() is True
    assert SnakemakeJob.prepare._avsrobust is True
    theirs = SnakemakeJob.is_pipe_or_service_input.__wrapped__

    # a job with three producers; "p" is a pipe of the second, "s" a service of the third;
    # "twice" is named by two producers (the first, a plain output, wins, as in Snakemake)
    class Dep:
        def __init__(self, special: set[str]) -> None:
            self.pipe_or_service_output = special

    dep1, dep2, dep3 = Dep(set()), Dep({"p", "twice"}), Dep({"s"})
    deps = {dep1: {"a", "twice"}, dep2: {"p", "twice", "b"}, dep3: {"s"}}
    job = SnakemakeJob.__new__(SnakemakeJob)
    job.dag = types.SimpleNamespace(dependencies={job: deps})
    names = ["a", "b", "p", "s", "twice", "unknown"]
    expected = {f: theirs(job, f) for f in names}
    assert expected == {
        "a": False, "b": False, "p": True, "s": True, "twice": False, "unknown": False
    }  # fmt: skip

    seen = {}

    async def prepare(self):
        seen.update({f: SnakemakeJob.is_pipe_or_service_input(self, f) for f in names})
        seen["cached"] = "_avsrobust_pipes" in self.__dict__
        return "prepared"

    wrapped, is_pipe = snakemake_scheduling._prepare(prepare, theirs)
    original = SnakemakeJob.is_pipe_or_service_input
    SnakemakeJob.is_pipe_or_service_input = is_pipe
    try:
        assert asyncio.run(wrapped(job)) == "prepared"
        assert seen == {**expected, "cached": True}
        assert "_avsrobust_pipes" not in job.__dict__  # outside prepare: Snakemake's walk
        deps[dep1].add("p2")
        dep1.pipe_or_service_output.add("p2")
        assert is_pipe(job, "p2") is True
    finally:
        SnakemakeJob.is_pipe_or_service_input = original
