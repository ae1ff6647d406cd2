from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from dataset_formats.memory_pool import use_bulk_memory_pool


@pytest.fixture
def restore_pool() -> Iterator[None]:
    pool = pa.default_memory_pool()
    yield
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(0)


def test_bulk_pool_is_jemalloc_and_new_buffers_come_from_it(restore_pool: None) -> None:
    pa.set_memory_pool(pa.system_memory_pool())
    assert use_bulk_memory_pool() == "jemalloc"
    assert pa.default_memory_pool().backend_name == "jemalloc"
    before = pa.jemalloc_memory_pool().bytes_allocated()
    values = pa.array(["x" * 1000] * 1000).cast(pa.large_string())
    assert pa.jemalloc_memory_pool().bytes_allocated() >= before + 1_000_000
    assert len(values) == 1000
