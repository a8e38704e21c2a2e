"""Logging for workflow jobs: one log file per job, a one-line error for bad input.

A user whose AVSBench copy has a broken file should read which file and why,
in the job's log and on the console, not a 40-line traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, DiskFull, InputError


def job_logger(log_path: str | Path | None, name: str = "avsrobust") -> logging.Logger:
    """A logger writing to the job's log file (and nothing else)."""
    logger = logging.getLogger(f"{name}.{log_path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_path and not logger.handlers:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def run_script(main: Callable[[logging.Logger], None], log_path: str | Path | None) -> None:
    """Run a Snakemake script body; bad input (or a full disk) ends the job with one clear line."""
    logger = job_logger(log_path)
    try:
        main(logger)
    except (InputError, ConfigError, DiskFull) as exc:
        logger.error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr)
        close_logger(logger)
        sys.exit(1)
    except Exception:
        logger.exception("job failed")
        close_logger(logger)
        raise
    close_logger(logger)
