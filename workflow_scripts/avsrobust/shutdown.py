"""SIGTERM to Snakemake stops the jobs it is running, so "did not complete" is true.

Snakemake's own SIGTERM handler stops scheduling and waits for the running jobs: a
training job then trained to its last epoch, and Snakemake reported "At least one job
did not complete successfully" about a run whose every job had. :func:`forward_sigterm`
puts a handler in front of Snakemake's (from the Snakefile's ``onstart``, local
execution) that sends SIGTERM on to every running job first. Training treats it as a
preemption (:mod:`avsrobust.resume`: it keeps its last completed epoch and exits 143;
the rerun resumes); other jobs stop, and Snakemake removes their outputs as it does for
any failed job. Then Snakemake's handler runs as before. So SIGTERM means the same for
the whole run as for one SLURM job: stop now, resume on the next run.

A job is the first process below Snakemake that is neither a shell nor Snakemake
itself: a ``script:`` job's Python is Snakemake's child, a ``shell:`` job's command runs
below ``bash``, and without ``force-use-threads`` each job runs inside a ``python -m
snakemake`` subprocess. Signalling the shell would orphan its command. Jobs that run in
Snakemake's threads (``run:`` blocks, milliseconds each) simply finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})


def _is_snakemake(proc: psutil.Process) -> bool:
    return "snakemake" in {Path(arg).name for arg in proc.cmdline()[:3]}


def job_processes(pid: int | None = None) -> list[psutil.Process]:
    """The process of every job that Snakemake (``pid``, default: this process) runs."""
    jobs: list[psutil.Process] = []

    def visit(proc: psutil.Process) -> None:
        for child in proc.children():
            try:
                launcher = child.name() in SHELLS or _is_snakemake(child)
            except psutil.Error:  # gone meanwhile
                continue
            if launcher:
                visit(child)
            else:
                jobs.append(child)

    with contextlib.suppress(psutil.Error):
        visit(psutil.Process(pid or os.getpid()))
    return jobs


def forward_sigterm(say: Callable[[str], Any]) -> None:
    """Make SIGTERM stop the running jobs before the installed handler (Snakemake's) runs.

    Main thread only (where Python handles signals); elsewhere nothing changes.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        jobs = job_processes()
        say(
            f"SIGTERM: stopping the {len(jobs)} running job(s) too (training keeps its last "
            "completed epoch; the next run resumes it)"
        )
        for job in jobs:
            with contextlib.suppress(psutil.Error):
                job.send_signal(signal.SIGTERM)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, handler)
