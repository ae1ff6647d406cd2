"""Bounds on what one file may ask of the reader, so a hostile file cannot exhaust memory or time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from dataset_formats.errors import MalformedFile

# Far beyond any real fine-tuning table; past this, per-column work (stats, mapping) explodes.
MAX_COLUMNS = 10_000
# One CSV record (row) may span at most this many bytes; the reader's block grows up to it.
MAX_RECORD_BYTES = 64 << 20
# One cell: far beyond any prompt or answer a model trains on.
MAX_FIELD_BYTES = 16 << 20


def check_columns(names: Sequence[str], kind: str) -> None:
    if len(names) > MAX_COLUMNS:
        raise MalformedFile(
            f"The {kind} file has {len(names):,} columns; at most {MAX_COLUMNS:,} are supported. "
            "Keep only the columns the fine-tune needs.", line=1 if kind == "CSV" else None,
        )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise MalformedFile(f"Column names must be unique; repeated: {duplicates}", line=1 if kind == "CSV" else None)



def check_field_sizes(batch: pa.RecordBatch, rows_before: int) -> None:
    """Refuse a cell larger than MAX_FIELD_BYTES, naming its row and column."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        lengths = pc.binary_length(column)
        largest = pc.max(lengths).as_py()
        if largest is not None and largest > MAX_FIELD_BYTES:
            row = rows_before + int(pc.index(lengths, largest).as_py()) + 1
            raise MalformedFile(
                f"A field in column {name!r} is {largest >> 20} MiB; a field may hold at most "
                f"{MAX_FIELD_BYTES >> 20} MiB. Shorten it or drop the row.", row=row,
            )
