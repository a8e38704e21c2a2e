"""Two costs of Snakemake's scheduling loop that grow with the number of ready jobs, removed.

Both were found with py-spy on the main Snakemake process building S4 negative audio
(issue 11; README "Performance"); neither changes what runs, only the greedy scheduler's
tie-breaks could differ.

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

:func:`install` applies both for the pinned Snakemake (9.x, requirements.txt), and only when
the code it replaces is the code it was written against; otherwise it changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
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


def install() -> bool:
    """Apply both changes (idempotent); False when this Snakemake is not the one they fit."""
    try:
        import snakemake
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
    return True
