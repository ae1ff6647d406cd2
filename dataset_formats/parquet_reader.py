"""Streaming Parquet reader that hands out every column as strings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_formats.errors import MalformedFile


def as_string_array(array: pa.Array) -> pa.Array:
    """Cast one column to ``string``; nested values become compact JSON text, nulls stay null."""
    kind = array.type
    if pa.types.is_string(kind):
        return array
    if pa.types.is_dictionary(kind):
        return as_string_array(array.dictionary_decode())
    if pa.types.is_nested(kind):
        values = [None if v is None else msgspec.json.encode(v).decode() for v in array.to_pylist()]
        return pa.array(values, type=pa.string())
    return pc.cast(array, pa.string())


def iter_parquet_batches(path: Path, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows == 0:  # still tell callers the columns
            names = parquet.schema_arrow.names
            yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names], names=names)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            yield pa.RecordBatch.from_arrays(
                [as_string_array(column) for column in batch.columns], names=batch.schema.names
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedFile(f"Cannot read the Parquet file: {exc}") from exc
