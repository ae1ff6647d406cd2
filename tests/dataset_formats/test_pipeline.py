from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dataset_formats.pipeline import ordered_map, prefetch


def test_prefetch_keeps_order_and_reraises() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise ValueError("reader failed")

    got: list[int] = []
    with pytest.raises(ValueError, match="reader failed"):
        for item in prefetch(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    before = threading.active_count()
    stream = prefetch(iter(range(1000)), depth=2)
    assert next(stream) == 0
    stream.close()
    time.sleep(0.05)
    assert threading.active_count() == before


def test_ordered_map_returns_results_in_input_order() -> None:
    def slow_for_small(x: int) -> int:
        time.sleep(0.01 * (5 - x % 5))
        return x * x

    assert list(ordered_map(slow_for_small, range(12), workers=3, max_pending=4)) == [x * x for x in range(12)]
