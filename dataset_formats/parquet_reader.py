"""Streaming Parquet reader that hands out every column as strings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_formats.errors import MalformedFile
from dataset_formats.limits import check_columns
from dataset_formats.pipeline import CHECK_WORKERS, ordered_map

# Checking UTF-8 costs about as much CPU as decoding (0.6 s per million 1 KB rows). Done after
# each batch on the reading thread, the two added up and bounded the speed of a whole conversion
# (its main thread spent 60% of its time waiting for the next batch), hence CHECK_WORKERS.


def as_string_array(array: pa.Array) -> pa.Array:
    """Cast one column to ``string``; nested values become compact JSON text, nulls stay null."""
    kind = array.type
    if pa.types.is_string(kind):
        array.validate(full=True)  # Parquet readers do not check UTF-8; writers can get it wrong
        return array
    if pa.types.is_dictionary(kind):
        return as_string_array(array.dictionary_decode())
    if pa.types.is_nested(kind):
        values = [None if v is None else msgspec.json.encode(v).decode() for v in array.to_pylist()]
        return pa.array(values, type=pa.string())
    return pc.cast(array, pa.string())


def _as_strings(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([as_string_array(column) for column in batch.columns], names=batch.schema.names)


def _row_group_runs(metadata: pq.FileMetaData, rows: int = 1 << 16) -> Iterator[list[int]]:
    """Consecutive row groups holding at least ``rows`` rows. One reader over all row groups keeps
    memory growing with the file (1.2 GB for a 5,700-group file); a fresh reader per run does not.
    """
    run: list[int] = []
    count = 0
    for index in range(metadata.num_row_groups):
        run.append(index)
        count += metadata.row_group(index).num_rows
        if count >= rows:
            yield run
            run, count = [], 0
    if run:
        yield run


def iter_parquet_batches(
    path: Path, batch_rows: int = 65536, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """``columns`` limits reading to those columns (Parquet is columnar, so the others cost nothing)."""
    try:
        parquet = pq.ParquetFile(path)
        check_columns(parquet.schema_arrow.names, "Parquet")
        names = [name for name in parquet.schema_arrow.names if columns is None or name in columns]
        if parquet.metadata.num_rows == 0:  # still tell callers the columns
            yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names], names=names)
        decoded = (
            batch
            for groups in _row_group_runs(parquet.metadata)
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups, columns=names)
        )
        yield from ordered_map(_as_strings, decoded, workers=CHECK_WORKERS, max_pending=CHECK_WORKERS + 1)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedFile(f"Cannot read the Parquet file: {exc}") from exc
