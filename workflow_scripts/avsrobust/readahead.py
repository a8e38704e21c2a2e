"""Read files ahead in threads, results in input order, memory bounded.

PIL and soundfile release the GIL while decoding, so a few threads keep the next
items ready while the caller works on the current one (the frame cache writes its
memory map, the feature job runs the log-mel front end).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(
    load: Callable[[T], R], items: Iterable[T], workers: int, window: int
) -> Iterator[R]:
    """``load(item)`` for every item, in order; up to ``window`` loads run or wait ahead.

    ``workers <= 1`` loads in the calling thread, one item at a time. An exception of
    ``load`` is raised when its item's turn comes; pending loads are then cancelled.
    """
    if workers <= 1:
        for item in items:
            yield load(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read_ahead")
    try:
        todo = iter(items)
        pending: deque[Future[R]] = deque()
        for item in todo:
            pending.append(pool.submit(load, item))
            if len(pending) >= max(window, 1):
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, _END)
            if nxt is not _END:
                pending.append(pool.submit(load, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()
