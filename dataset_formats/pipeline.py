"""Threads that overlap reading, rendering and writing, with bounded memory.

Arrow's parsers and kernels release the GIL, so on a few cores the reader can parse the next
batches while earlier ones are rendered and written.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

# Threads that check what a reader decoded (UTF-8, field sizes) while it decodes the next batches:
# done on the reading thread, the checks added up with decoding and bounded a whole conversion.
CHECK_WORKERS = 2

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` on a background thread, keeping at most ``depth`` items ready."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone away."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            offer(error)

    thread = threading.Thread(target=produce, name="dataset-formats-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int, max_pending: int) -> Iterator[R]:
    """Like ``map``, with at most ``max_pending`` items in flight so memory stays bounded."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataset-formats") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= max_pending:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
