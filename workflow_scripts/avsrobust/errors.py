"""Errors that carry the file or row a user must fix.

Every check on user data raises :class:`InputError` so that a bad AVSBench copy
ends with one readable line (what is wrong, where) instead of a traceback from
deep inside soundfile, PIL or pandas.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InputError(ValueError):
    """A problem with user-provided data, naming the file (and row) at fault."""

    def __init__(self, where: str | Path, problem: str, row: int | None = None):
        self.where = str(where)
        self.problem = problem
        self.row = row
        location = self.where if row is None else f"{self.where}, row {row}"
        super().__init__(f"{location}: {problem}")


class ConfigError(ValueError):
    """An invalid configuration value (named by its key)."""


class DiskFull(OSError):
    """An output that did not fit (ENOSPC, or EDQUOT: over quota), named by its path.

    ``str()`` is the one line a user needs: ``No space left on device: <output>``
    (the temporary it was written to is gone by then).
    """

    def __init__(self, path: str | Path, code: int):
        super().__init__(code, os.strerror(code), str(path))

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename}"


def regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` if it is a regular file (symlinks followed), else InputError.

    Checked before opening user data: opening a FIFO blocks until someone writes
    to it (a stray named pipe in a data tree would hang the job), and a folder or
    device is never an input the user meant.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(path, f"{what} is missing") from None
    except OSError as exc:
        raise InputError(path, f"{what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device"
        raise InputError(path, f"{what} is {kind}, not a regular file")
    return path
