"""Which Snakemake run is working in this folder, so a second one can say so.

A second ``snakemake`` started while another runs in the same folder stops with
Snakemake's messages about the files the first one is writing ("The files below seem
to be incomplete ... rerun your command with the --rerun-incomplete flag", then
"Directory cannot be locked ... It can be removed with the --unlock argument"): advice
for a run that was killed, which here would let two runs write the same files. The
run that holds the folder leaves a marker (``onstart``; removed ``onsuccess`` /
``onerror``) and every later Snakemake start in the folder warns while that process is
alive (a marker left by a killed run names a dead process and is ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import psutil

from .atomic import atomic_write_text

MARKER = Path(".snakemake") / "avsrobust_active_run.json"


def mark(workdir: str | Path = ".") -> None:
    """Record this process as the run working in ``workdir``."""
    me = psutil.Process()
    doc = {"pid": me.pid, "created": me.create_time(), "command": " ".join(me.cmdline())}
    atomic_write_text(Path(workdir) / MARKER, json.dumps(doc) + "\n")


def unmark(workdir: str | Path = ".") -> None:
    """Remove the marker if this process wrote it."""
    path = Path(workdir) / MARKER
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text(encoding="utf-8"))["pid"] == os.getpid():
            path.unlink()


def other_run(workdir: str | Path = ".") -> str | None:
    """A description of another live run working in ``workdir`` (``None``: none).

    A process started by that run (a spawned job's Snakemake) is not "another run".
    """
    try:
        doc = json.loads((Path(workdir) / MARKER).read_text(encoding="utf-8"))
        pid, created = int(doc["pid"]), float(doc["created"])
        proc = psutil.Process(pid)
        alive = proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    me = psutil.Process()
    if not alive or pid == me.pid or pid in {p.pid for p in me.parents()}:
        return None
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    return f"another Snakemake run (pid {pid}, started {started}) is working in this folder"
