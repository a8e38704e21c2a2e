"""Four costs of Snakemake's scheduling loop that grow with the number of ready jobs, removed.

All were found with py-spy on the main Snakemake process building S4 negative audio
(issue 11; README "Performance"); none changes what runs, only the greedy scheduler's
tie-breaks could differ (1).

1. Input sizes. Before every scheduling pass, ``JobScheduler.job_selector`` calls
   ``update_input_sizes`` on *all* ready jobs, which awaits an ``exists()`` and a ``size()``
   for every input of every one of them. With thousands of per-clip jobs ready at once and
   a pass after (nearly) every finished job, that is quadratic: on a 20%-scale S4 build
   (2,974 jobs) it was 38% of the main process's samples, more than the clips' own work.
   The sizes only rank jobs in the greedy scheduler ("large inputs first"), and the inputs
   of a ready job are complete and do not change while it waits, so each job's inputs are
   looked up once (:func:`_update_input_sizes`).
2. The job-rate timer. With a ``--max-jobs-per-timespan`` cap, every pass ends by starting a
   ``threading.Timer`` thread that re-runs the scheduler after the timespan: one thread per
   pass, each alive for a second (10% of the main process's samples, and hundreds of
   sleeping threads). ``profiles/default`` lifts the cap to :data:`UNLIMITED_JOBS_PER_S`
   (Snakemake's default of 100/s throttles in-process clip jobs); a cap that high limits
   nothing, so the scheduler is built without a limiter, as Snakemake itself does for
   dry-runs. A lower cap (e.g. a cluster profile's) is left alone.
3. The greedy selection. Snakemake's greedy knapsack picks one job per round and
   recomputes every candidate's capacity each round: quadratic in the ready jobs (up to
   ``--scheduler-subsample``, 500 here) on every pass, 9% of the main process's CPU
   (``py-spy --gil``). :func:`_select_jobs` makes the same picks in one sorted walk.
4. Pipe inputs. ``Job.prepare`` asks, for every input, whether it is a pipe, and each
   question walks all the job's dependencies: quadratic for a job that reads a whole split
   (a manifest or feature job reads one WAV per clip: 10,000 at AVSBench scale). During one
   ``prepare`` the dependencies are fixed, so :func:`_prepare` answers from one walk.

:func:`install` applies all four for the pinned Snakemake (9.x, requirements.txt), and only when
the code it replaces is the code it was written against; otherwise it changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

#: A job-rate cap at least this high (jobs per second) is no cap (profiles/default).
UNLIMITED_JOBS_PER_S = 10000


async def _update_input_sizes(self: Any, jobs: Iterable[Any]) -> None:
    """``JobScheduler.update_input_sizes``, statting the inputs of each job once.

    Jobs already seen are skipped (a job hashes by identity; hashing every input path of
    every ready job on each pass was itself a quadratic cost). Unlike Snakemake's,
    the cache is never pruned: it holds one number per input path of the DAG's jobs
    (~50,000 at full AVSBench-Robust scale, a few MB), and pruning it would again walk every
    ready job's inputs on every pass.
    """
    seen: set[Any] = self.__dict__.setdefault("_avsrobust_sized_jobs", set())
    sizes = self._input_sizes

    async def get_size(path: Any) -> tuple[Any, int | None]:
        return path, await path.size() if await path.exists() else None

    new = [job for job in jobs if job not in seen]
    paths = {path for job in new for path in job.input}
    if paths:
        sizes.update(await asyncio.gather(*[get_size(path) for path in paths]))
    seen.update(new)


def _without_unlimited_rate_limiter(init: Any) -> Any:
    """``JobScheduler.__init__``, then no job-rate limiter when its cap limits nothing."""

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        limiter = getattr(self, "job_rate_limiter", None)
        if limiter is not None and limiter.max_jobs / limiter.timespan >= UNLIMITED_JOBS_PER_S:
            self.job_rate_limiter = None

    __init__._avsrobust = True  # type: ignore[attr-defined]
    return __init__


def _select_jobs(select_jobs: Callable[..., Any]) -> Callable[..., Any]:
    """The greedy ``Scheduler.select_jobs``, the same picks in O(n log n) instead of O(n^2).

    At full greediness Snakemake's loop (Akcay et al.'s greedy for the multidimensional
    knapsack) takes, round after round, the best-rewarded candidate that still fits the
    remaining capacity (ties: the first in the given order), until none fits. Capacity only
    shrinks, so a candidate that does not fit when its turn comes never fits later: walking
    the candidates once, best reward first (a stable sort keeps the ties in order), and
    taking each that fits makes the same picks in the same sequence. The selection is
    returned in the given order, as Snakemake returns it. Other settings (a greediness
    below 1, rewards by priority only) and odd inputs (a candidate demanding nothing, a
    non-integer capacity) are left to Snakemake's loop.
    """

    @functools.wraps(select_jobs)
    def select(
        self: Any,
        selectable_jobs: Sequence[Any],
        remaining_jobs: Sequence[Any],
        available_resources: Mapping[str, Any],
        input_sizes: dict[Any, int],
    ) -> Sequence[Any]:
        capacity = [available_resources[name] for name in available_resources]
        weights = [self.job_weight(job, available_resources) for job in selectable_jobs]
        if (
            self.settings.greediness != 1
            or self.settings.omit_prioritize_by_temp_and_input
            or not all(type(b) is int for b in capacity)
            or not all(type(a) is int for w in weights for a in w)
            or not all(any(a > 0 for a in w) for w in weights)
        ):
            return select_jobs(
                self, selectable_jobs, remaining_jobs, available_resources, input_sizes
            )
        rewards = [self.job_reward(job, input_sizes) for job in selectable_jobs]
        taken = [False] * len(selectable_jobs)
        for j in sorted(range(len(selectable_jobs)), key=rewards.__getitem__, reverse=True):
            w = weights[j]
            if all(a <= 0 or a <= b for a, b in zip(w, capacity, strict=True)):
                taken[j] = True
                capacity = [b - a for a, b in zip(w, capacity, strict=True)]
        return [job for job, t in zip(selectable_jobs, taken, strict=True) if t]

    select._avsrobust = True  # type: ignore[attr-defined]
    return select


def _prepare(
    prepare: Callable[..., Any], is_pipe: Callable[..., bool]
) -> tuple[Callable[..., Any], Callable[..., bool]]:
    """``Job.prepare`` with its pipe-input questions answered from one dependency walk."""

    @functools.wraps(prepare)
    async def wrapped(self: Any) -> Any:
        pipes: dict[Any, bool] = {}
        # Snakemake's answer for a path: "in the first dependency that provides it, is it
        # a pipe or service output?"; first provider wins, as in its loop.
        for dep, files in self.dag.dependencies[self].items():
            special = dep.pipe_or_service_output
            for f in files:
                if f not in pipes:
                    pipes[f] = f in special
        self.__dict__["_avsrobust_pipes"] = pipes
        try:
            return await prepare(self)
        finally:
            self.__dict__.pop("_avsrobust_pipes", None)

    def is_pipe_or_service_input(self: Any, path: Any) -> bool:
        pipes = self.__dict__.get("_avsrobust_pipes")
        if pipes is None:  # outside prepare: Snakemake's own walk
            return is_pipe(self, path)
        return pipes.get(path, False)

    wrapped._avsrobust = True  # type: ignore[attr-defined]
    is_pipe_or_service_input._avsrobust = True  # type: ignore[attr-defined]
    is_pipe_or_service_input.__wrapped__ = is_pipe  # type: ignore[attr-defined]
    return wrapped, is_pipe_or_service_input


def _names(code: Any) -> set[str]:
    """The global and attribute names a code object and its nested ones (comprehensions) use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def install() -> bool:
    """Apply the four changes (idempotent); False when this Snakemake is not the one they
    fit (then nothing is changed)."""
    try:
        import snakemake
        from snakemake.jobs import Job
        from snakemake.scheduling.greedy import Scheduler
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    if not snakemake.__version__.startswith("9."):
        return False
    current = getattr(JobScheduler, "update_input_sizes", None)
    if current is not _update_input_sizes:
        if (
            current is None
            or not asyncio.iscoroutinefunction(current)
            or "_input_sizes" not in current.__code__.co_names
            or "job_rate_limiter" not in JobScheduler.__init__.__code__.co_names
        ):
            return False
        JobScheduler.update_input_sizes = _update_input_sizes
    if not getattr(JobScheduler.__init__, "_avsrobust", False):
        JobScheduler.__init__ = _without_unlimited_rate_limiter(JobScheduler.__init__)
    select_jobs = Scheduler.select_jobs
    if not getattr(select_jobs, "_avsrobust", False) and {"job_weight", "greediness"} <= _names(
        select_jobs.__code__
    ):
        Scheduler.select_jobs = _select_jobs(select_jobs)
    if not getattr(Job.prepare, "_avsrobust", False):
        is_pipe = Job.is_pipe_or_service_input
        if (
            asyncio.iscoroutinefunction(Job.prepare)
            and "is_pipe_or_service_input" in _names(Job.prepare.__code__)
            and is_pipe.__code__.co_names[:2] == ("dag", "dependencies")
        ):
            Job.prepare, Job.is_pipe_or_service_input = _prepare(Job.prepare, is_pipe)
    return True
