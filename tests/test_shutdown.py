"""SIGTERM forwarding (avsrobust.shutdown): which processes count as a running job."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from avsrobust.shutdown import job_processes


def test_jobs_are_the_first_processes_below_shells_and_snakemake():
    script = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    shell = subprocess.Popen(["bash", "-c", "sleep 61; true"])  # a shell: its command is the job
    try:
        deadline = time.monotonic() + 30
        while True:
            jobs = {p.pid: p.cmdline() for p in job_processes()}
            if len(jobs) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert script.pid in jobs
        assert shell.pid not in jobs
        assert ["sleep", "61"] in jobs.values()
    finally:
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.kill()
        for proc in (script, shell):
            proc.kill()
            proc.wait()
