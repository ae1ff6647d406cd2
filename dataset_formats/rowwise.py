"""Per-row path: evaluate a line shape for each row in Python and encode it with msgspec.

Used where a line depends on parsing the row (JSON answers, tool calls, a messages column) and as
the reference the columnar path is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pyarrow as pa

from dataset_formats.expressions import Row, evaluate_shape
from dataset_formats.row_errors import RowError

_ENCODER = msgspec.json.Encoder()


def iter_rows(batch: pa.RecordBatch) -> Iterator[Row]:
    names = batch.schema.names
    for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
        yield dict(zip(names, values, strict=True))


def encode_line(shape: Any, row: Row) -> bytes:
    """Compact UTF-8 JSON (non-ASCII kept as is) followed by ``\\n``."""
    return _ENCODER.encode(evaluate_shape(shape, row)) + b"\n"


def build_lines(batch: pa.RecordBatch, shape_for: Callable[[Row], Any]) -> Iterator[tuple[int, bytes | RowError]]:
    """(index in batch, line or the row's error) for every row."""
    for index, row in enumerate(iter_rows(batch)):
        try:
            yield index, encode_line(shape_for(row), row)
        except RowError as error:
            yield index, error
