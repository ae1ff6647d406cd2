"""Public entry point for reading any supported dataset file as string-typed Arrow batches."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_formats.csv_reader import DEFAULT_BLOCK_SIZE, iter_csv_batches, read_header, sniff_delimiter
from dataset_formats.errors import MalformedFile, UnsupportedFileType
from dataset_formats.json_reader import batched, iter_json_array_records, iter_jsonl_records
from dataset_formats.parquet_reader import iter_parquet_batches

FileType = Literal["csv", "tsv", "parquet", "jsonl", "json"]

_EXTENSIONS: dict[str, FileType] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


def detect_file_type(filename: str | os.PathLike[str]) -> FileType:
    suffix = Path(filename).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise UnsupportedFileType(
            f"Cannot read {Path(filename).name!r}: supported file types are {', '.join(sorted(_EXTENSIONS))}"
        )
    return _EXTENSIONS[suffix]


def read_column_names(path: str | os.PathLike[str], file_type: FileType | None = None) -> list[str] | None:
    """Column names without reading any rows; None for JSON files, whose keys vary by record."""
    path = Path(path)
    file_type = file_type or detect_file_type(path)
    if file_type in ("csv", "tsv"):
        return read_header(path, "\t" if file_type == "tsv" else sniff_delimiter(path))
    if file_type == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MalformedFile(f"Cannot read the Parquet file: {exc}") from exc
    return None


def iter_batches(
    path: str | os.PathLike[str],
    file_type: FileType | None = None,
    batch_rows: int = 65536,
    *,
    delimiter: str | None = None,
    csv_block_size: int = DEFAULT_BLOCK_SIZE,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield batches of at most ``batch_rows`` rows; every column is ``string`` (nulls only where the
    source has real nulls: Parquet nulls, JSON ``null`` or a missing key). Never loads the whole file.

    CSV/TSV: header row required, delimiter sniffed from the header unless given, UTF-8 with or
    without BOM; "NA", "null", "N/A" and "" stay strings.

    ``columns`` is a hint: CSV and Parquet batches then carry at least those columns (skipping the
    work for the others); JSON files always give every key.
    """
    path = Path(path)
    file_type = file_type or detect_file_type(path)
    if file_type in ("csv", "tsv"):
        delimiter = delimiter or ("\t" if file_type == "tsv" else None)
        return iter_csv_batches(path, delimiter, batch_rows, csv_block_size, columns)
    if file_type == "parquet":
        return iter_parquet_batches(path, batch_rows, columns)
    records = iter_jsonl_records(path) if file_type == "jsonl" else iter_json_array_records(path)
    return batched(records, batch_rows)
