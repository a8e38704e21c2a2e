"""Errors that carry the file or row a user must fix.

Every check on user data raises :class:`InputError` so that a bad AVSBench copy
ends with one readable line (what is wrong, where) instead of a traceback from
deep inside soundfile, PIL or pandas.
"""

from __future__ import annotations

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
