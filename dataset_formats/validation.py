"""Streaming dataset report: counts, per-column lengths, duplicates, token estimate, row problems.

Memory: per-column counters, a fixed-size length histogram, and 8 bytes per row for duplicate
detection (64-bit fingerprints; exact duplicate counting cannot do with less).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataset_formats.errors import MappingError
from dataset_formats.mapping import ColumnMapping, detect_mapping
from dataset_formats.messages_column import parse_messages
from dataset_formats.readers import FileType, detect_file_type, iter_batches
from dataset_formats.row_errors import IssueLog, RowError, RowIssue
from dataset_formats.row_hash import content_key, digest64
from dataset_formats.rowwise import iter_rows

CHARS_PER_TOKEN = 4  # rough average for English text with BPE tokenizers; no tokenizer is downloaded
PERCENTILES = (50, 90, 95, 99)
_EXACT_UP_TO = 4096  # row lengths below this are histogrammed exactly, longer ones within 1 %
_LOG_STEP = math.log(1.01)
_BUCKETS = _EXACT_UP_TO + 2100  # covers lengths up to ~5e12 characters


def _bucket(lengths: np.ndarray) -> np.ndarray:
    long = np.maximum(lengths, _EXACT_UP_TO).astype(np.float64) / _EXACT_UP_TO
    logarithmic = _EXACT_UP_TO + np.ceil(np.log(long) / _LOG_STEP).astype(np.int64)
    return np.where(lengths < _EXACT_UP_TO, lengths, logarithmic)


def _bucket_value(bucket: int) -> int:
    if bucket < _EXACT_UP_TO:
        return bucket
    return math.ceil(_EXACT_UP_TO * math.exp((bucket - _EXACT_UP_TO) * _LOG_STEP))


@dataclass(frozen=True)
class ColumnStats:
    """Lengths are in characters and cover non-empty cells only (None when there are none)."""

    non_empty: int
    empty: int  # "" or null
    min_length: int | None
    mean_length: float | None
    max_length: int | None


@dataclass
class _ColumnTotals:
    non_empty: int = 0
    empty: int = 0
    total_length: int = 0
    min_length: int | None = None
    max_length: int | None = None

    def add(self, column: pa.Array) -> np.ndarray:
        lengths = pc.fill_null(pc.utf8_length(column), 0)
        present = pc.filter(lengths, pc.greater(lengths, 0))
        self.non_empty += len(present)
        self.empty += len(column) - len(present)
        if len(present):
            low, high = pc.min_max(present).values()
            self.min_length = min(self.min_length or low.as_py(), low.as_py())
            self.max_length = max(self.max_length or 0, high.as_py())
            self.total_length += pc.sum(present).as_py()
        return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)

    def stats(self) -> ColumnStats:
        mean = self.total_length / self.non_empty if self.non_empty else None
        return ColumnStats(self.non_empty, self.empty, self.min_length, mean, self.max_length)


@dataclass(frozen=True)
class ValidationReport:
    file_type: str
    row_count: int
    columns: list[str]
    column_stats: dict[str, ColumnStats]
    duplicate_rows: int  # rows identical to an earlier row
    row_length_percentiles: dict[str, int]  # characters per row over all columns: p50..p99, max
    total_characters: int
    estimated_tokens: int  # ceil(total_characters / CHARS_PER_TOKEN)
    mapping: ColumnMapping | None
    mapping_error: str | None
    error_count: int
    row_errors: list[RowIssue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_type": self.file_type,
            "row_count": self.row_count,
            "columns": list(self.columns),
            "column_stats": {name: vars(stats) for name, stats in self.column_stats.items()},
            "duplicate_rows": self.duplicate_rows,
            "row_length_percentiles": dict(self.row_length_percentiles),
            "total_characters": self.total_characters,
            "estimated_tokens": self.estimated_tokens,
            "mapping": self.mapping.to_dict() if self.mapping else None,
            "mapping_error": self.mapping_error,
            "error_count": self.error_count,
            "row_errors": [issue.to_dict() for issue in self.row_errors],
        }


def _resolve_mapping(
    columns: list[str], mapping: ColumnMapping | Mapping[str, str] | None
) -> tuple[ColumnMapping | None, str | None]:
    if isinstance(mapping, ColumnMapping):
        return mapping, None
    try:
        return detect_mapping(columns, mapping), None
    except MappingError as exc:
        return None, exc.detail


def _row_issues(batch: pa.RecordBatch, mapping: ColumnMapping, offset: int) -> list[RowIssue]:
    """Cells a conversion would reject: empty prompt/answer/preference cells, bad messages cells."""
    issues: list[RowIssue] = []
    required = [mapping.chosen, mapping.rejected]
    if mapping.messages is None:
        required += [mapping.user, mapping.assistant]
    for column in filter(None, required):
        if column in batch.schema.names:
            empty = pc.fill_null(pc.equal(pc.binary_length(batch.column(column)), 0), True)
            rows = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
        else:
            rows = np.arange(batch.num_rows)
        issues += [RowIssue(offset + int(i) + 1, column, f"{column!r} is empty") for i in rows]
    if mapping.messages is not None and mapping.messages in batch.schema.names:
        for index, row in enumerate(iter_rows(batch.select([mapping.messages]))):
            try:
                parse_messages(row[mapping.messages], mapping.messages, "")
            except RowError as error:
                issues.append(RowIssue(offset + index + 1, error.column, error.message))
    return sorted(issues)


def validate(
    path: str | os.PathLike[str],
    file_type: FileType | None = None,
    mapping: ColumnMapping | Mapping[str, str] | None = None,
    max_errors_shown: int = 100,
) -> ValidationReport:
    """Read the whole file once, in batches, and summarise it. File-level problems raise
    ``DatasetError``; row-level ones are counted and the first ``max_errors_shown`` listed."""
    file_type = file_type or detect_file_type(path)
    columns: list[str] = []
    totals: dict[str, _ColumnTotals] = {}
    histogram = np.zeros(_BUCKETS, dtype=np.int64)
    digests: list[np.ndarray] = []
    log = IssueLog(max_errors_shown)
    resolved: ColumnMapping | None = None
    mapping_error: str | None = None
    rows = max_row_length = total_chars = 0
    for batch in iter_batches(path, file_type):
        if not rows and resolved is None and mapping_error is None:
            resolved, mapping_error = _resolve_mapping(batch.schema.names, mapping)
        columns += [name for name in batch.schema.names if name not in totals]
        row_lengths = np.zeros(batch.num_rows, dtype=np.int64)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            row_lengths += totals.setdefault(name, _ColumnTotals()).add(column)
        for name in totals.keys() - set(batch.schema.names):
            totals[name].empty += batch.num_rows
        histogram += np.bincount(_bucket(row_lengths), minlength=_BUCKETS)[:_BUCKETS]
        max_row_length = max(max_row_length, int(row_lengths.max(initial=0)))
        total_chars += int(row_lengths.sum())
        digests.append(np.fromiter((digest64(content_key(r)) for r in iter_rows(batch)), np.uint64))
        if resolved is not None:
            for issue in _row_issues(batch, resolved, rows):
                log.add(issue)
        rows += batch.num_rows
    fingerprints = np.concatenate(digests) if digests else np.empty(0, np.uint64)
    cumulative = np.cumsum(histogram)
    percentiles = {
        f"p{p}": _bucket_value(int(np.searchsorted(cumulative, math.ceil(rows * p / 100)))) if rows else 0
        for p in PERCENTILES
    }
    percentiles = {name: min(value, max_row_length) for name, value in percentiles.items()}
    percentiles["max"] = max_row_length
    return ValidationReport(
        file_type=file_type,
        row_count=rows,
        columns=columns,
        column_stats={name: totals[name].stats() for name in columns},
        duplicate_rows=rows - len(np.unique(fingerprints)),
        row_length_percentiles=percentiles,
        total_characters=total_chars,
        estimated_tokens=math.ceil(total_chars / CHARS_PER_TOKEN),
        mapping=resolved,
        mapping_error=mapping_error,
        error_count=log.count,
        row_errors=log.shown,
    )
