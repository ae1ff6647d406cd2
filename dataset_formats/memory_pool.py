"""Arrow's memory pool for processes that convert large files.

pyarrow's default pool (mimalloc) returns freed memory to the operating system within
milliseconds. A conversion frees every batch's buffers and allocates the next batch's, so it kept
faulting in and zeroing fresh pages: 11% of a Parquet conversion's CPU (perf). jemalloc with a
decay keeps freed pages for reuse that long before returning them. Measured with
``benchmarks/bench_convert.py``'s Parquet case, 1M rows, 5 runs of each alternating: median
437k rows/s and 285 MB peak RSS, against 378k rows/s and 354 MB with the default pool.

The pool is process-wide, so the library never switches it on its own: programs that own their
process (``finetune-service serve`` and ``convert``, the benchmark) call ``use_bulk_memory_pool``.
"""

from __future__ import annotations

import pyarrow as pa

DECAY_MS = 10_000


def use_bulk_memory_pool(decay_ms: int = DECAY_MS) -> str:
    """Make jemalloc, keeping freed pages for ``decay_ms``, Arrow's default pool; the backend's name.

    Where pyarrow was built without jemalloc (its Windows wheels), the default pool stays.
    """
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return str(pa.default_memory_pool().backend_name)
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(decay_ms)
    return str(pool.backend_name)
