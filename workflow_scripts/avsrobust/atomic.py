"""Write files atomically: a temporary name in the same folder, then rename.

A job killed half-way (SIGKILL, node failure, full disk) leaves either the old
file or no file, never a truncated one that a later run would trust. Three more
promises, because outputs are shared and disks fill:

- an output gets the mode any file of the user gets (``0o666`` less the umask),
  as ``mkstemp``'s ``0o600`` would otherwise survive the rename;
- the temporaries a killed writer left of an output (``.{name}.XXXXXXXX.tmp``)
  are removed before that output is written again;
- a full disk (or quota) ends the write with :class:`~avsrobust.errors.DiskFull`,
  naming the output: ``No space left on device: <path>``. Memory-mapped outputs
  reserve their whole size first (:func:`npy_memmap`): a write into a mapped page
  the disk cannot hold would kill the job with SIGBUS, and no word of why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib.format import open_memmap

from .errors import DiskFull

#: the random part of a temporary's name: 8 characters, as ``tempfile.mkstemp`` makes them
_TMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def temporary_name(path: Path) -> Path:
    """A fresh temporary name for ``path``: ``.{name}.XXXXXXXX.tmp`` beside it."""
    token = "".join(secrets.choice(_TMP_CHARS) for _ in range(8))
    return path.with_name(f".{path.name}.{token}.tmp")


def output_of(tmp: str | Path) -> Path | None:
    """The output a temporary of :func:`temporary_name` stands for (``None``: not one)."""
    tmp = Path(tmp)
    match = re.fullmatch(rf"\.(.+)\.[{_TMP_CHARS}]{{8}}\.tmp", tmp.name)
    return tmp.with_name(match.group(1)) if match else None


def stale_temporaries(path: Path) -> list[Path]:
    """Temporaries of ``path`` that a killed writer left behind (never another output's)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[{_TMP_CHARS}]{{8}}\.tmp")
    try:
        with os.scandir(path.parent) as entries:
            return [path.parent / e.name for e in entries if pattern.fullmatch(e.name)]
    except FileNotFoundError:
        return []


def _create(path: Path) -> Path:
    """Create an empty temporary for ``path``; mode 0o666 less the umask, as ``open`` gives."""
    for _ in range(100):
        tmp = temporary_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Stale temporaries of ``path`` are removed first; a full disk raises
    :class:`~avsrobust.errors.DiskFull` naming ``path`` (the temporary is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    tmp_path = _create(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DiskFull) and exc.errno in _FULL:
            # the failed file: the one the error names (nested writes), else this one
            raise DiskFull(output_of(exc.filename or "") or path, exc.errno) from exc
        raise


@contextlib.contextmanager
def naming(tmp: str | Path) -> Iterator[None]:
    """Errors without a file name (a failed ``write``) name ``tmp``: an enclosing
    :func:`atomic_path` then names the right output when several are open."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(tmp)) from exc


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when closed cleanly."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def reserve(path: str | Path, start: int, end: int) -> None:
    """Allocate bytes ``[start, end)`` of ``path`` on disk now (``OSError`` ENOSPC if they
    do not fit). Where the file system cannot preallocate, zeros are written instead."""
    if end <= start:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        with naming(path):
            try:
                os.posix_fallocate(fd, start, end - start)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                chunk = bytes(1 << 20)
                os.lseek(fd, start, os.SEEK_SET)
                for offset in range(start, end, len(chunk)):
                    os.write(fd, chunk[: min(len(chunk), end - offset)])
    finally:
        os.close(fd)


def npy_memmap(tmp: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.memmap:
    """A writable memory map of a new plain ``.npy`` at ``tmp``, its space reserved.

    Byte-identical to ``np.save`` of the same array once written. Use on an
    :func:`atomic_path` temporary: a disk without room raises there, naming the output.
    """
    array = open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    try:
        reserve(tmp, array.offset, array.offset + array.nbytes)
    except BaseException:
        del array
        raise
    return array
