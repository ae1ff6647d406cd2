"""Convert a dataset file into provider JSONL, streaming batch by batch into an atomic writer."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataset_formats.columnar import CompiledShape
from dataset_formats.errors import IncompatibleOptions
from dataset_formats.format_types import DataStrategy, FormatType
from dataset_formats.mapping import ColumnMapping
from dataset_formats.plan import ConversionOptions, LinePlan, build_plan
from dataset_formats.readers import FileType, iter_batches
from dataset_formats.row_errors import IssueLog, RowError, RowIssue
from dataset_formats.rowwise import build_lines
from dataset_formats.splits import SplitAssigner, SplitSpec
from dataset_formats.writer import AtomicJsonlWriter

__all__ = ["ConversionOptions", "ConversionResult", "convert", "iter_lines"]

# Arrow string arrays address at most 2 GiB; keep each batch's output well below that.
_MAX_BATCH_BYTES = 256 << 20


@dataclass(frozen=True)
class ConversionResult:
    rows_read: int
    rows_written: int
    error_count: int
    row_errors: list[RowIssue]
    format_type: FormatType
    data_strategy: DataStrategy
    mapping: ColumnMapping
    system_message: str | None  # the fixed text, when one message was used for every line
    system_message_template: str | None
    system_message_column: str | None  # empty cells fall back to the default system message
    thinking_instructions: str | None
    split: SplitSpec | None = None
    split_name: str | None = None
    split_counts: dict[str, int] = field(default_factory=dict)  # rows assigned to every split
    rows_filtered: int = 0  # excluded by the split's filter

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "error_count": self.error_count,
            "row_errors": [issue.to_dict() for issue in self.row_errors],
            "format_type": str(self.format_type),
            "data_strategy": str(self.data_strategy),
            "mapping": self.mapping.to_dict(),
            "system_message": self.system_message,
            "system_message_template": self.system_message_template,
            "system_message_column": self.system_message_column,
            "thinking_instructions": self.thinking_instructions,
            "split": self.split.to_dict() if self.split else None,
            "split_name": self.split_name,
            "split_counts": dict(self.split_counts),
            "rows_filtered": self.rows_filtered,
        }


def _bounded(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    if batch.nbytes <= _MAX_BATCH_BYTES or batch.num_rows <= 1:
        yield batch
        return
    half = batch.num_rows // 2
    yield from _bounded(batch.slice(0, half))
    yield from _bounded(batch.slice(half))


def _is_empty(column: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.equal(pc.binary_length(column), 0), True).to_numpy(zero_copy_only=False)


def _line_bytes(lines: pa.Array) -> memoryview:
    """The contiguous bytes of all lines, without copying them out of the Arrow buffer."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[start:end]


class _Conversion:
    """Per-file state: counters, the issue log, the split assigner and the compiled fast path."""

    def __init__(
        self,
        plan: LinePlan,
        log: IssueLog,
        assigner: SplitAssigner | None,
        split_index: int | None,
        rowwise: bool,
    ) -> None:
        self.plan = plan
        self.log = log
        self.assigner = assigner
        self.split_index = split_index
        self.compiled = CompiledShape.compile(plan.static_shape) if plan.columnar and not rowwise else None
        self.rows_read = 0
        self.rows_written = 0
        self.rows_filtered = 0
        self.split_counts = dict.fromkeys(assigner.spec.names, 0) if assigner else {}
        self._mapped = [column for column in plan.mapping.to_dict().values() if column]

    def chunks(self, batch: pa.RecordBatch) -> Iterator[bytes | memoryview]:
        offset = self.rows_read
        self.rows_read += batch.num_rows
        for name in self._mapped:  # a JSONL batch may lack a key the first batch had
            if name not in batch.schema.names:
                batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.string()))
        keep = self._split_mask(batch)
        issues: list[RowIssue] = []
        for role, column in self.plan.required:
            empty = _is_empty(batch.column(column))
            issues += [
                RowIssue(offset + int(i) + 1, column, f"the {role} column {column!r} is empty")
                for i in np.flatnonzero(keep & empty)
            ]
            keep &= ~empty
        rows = np.flatnonzero(keep)
        selected = batch if len(rows) == batch.num_rows else batch.take(pa.array(rows))
        if self.compiled is not None and len(rows):
            self.rows_written += len(rows)
            yield _line_bytes(self.compiled.build_lines(selected))
        elif len(rows):
            lines = []
            for index, line in build_lines(selected, self.plan.shape_for):
                if isinstance(line, RowError):
                    issues.append(RowIssue(offset + int(rows[index]) + 1, line.column, line.message))
                else:
                    lines.append(line)
            self.rows_written += len(lines)
            yield b"".join(lines)
        for issue in sorted(issues):
            self.log.add(issue)

    def _split_mask(self, batch: pa.RecordBatch) -> np.ndarray:
        if self.assigner is None:
            return np.ones(batch.num_rows, dtype=bool)
        indices = self.assigner.assign(batch)
        counts = np.bincount(indices[indices >= 0], minlength=len(self.split_counts))
        for name, count in zip(self.split_counts, counts, strict=True):
            self.split_counts[name] += int(count)
        self.rows_filtered += int(np.count_nonzero(indices < 0))
        return np.asarray(indices == self.split_index)


def _split_index(split: SplitSpec | None, split_name: str | None) -> int | None:
    if split is None and split_name is None:
        return None
    if split is None or split_name is None:
        raise IncompatibleOptions("Give both split and split_name, or neither")
    if split_name not in split.ratios:
        raise IncompatibleOptions(f"Split {split_name!r} is not one of {split.names}")
    return split.names.index(split_name)


def _prepare(
    source: str | os.PathLike[str],
    options: ConversionOptions,
    split: SplitSpec | None,
    split_name: str | None,
    max_errors_shown: int,
    file_type: FileType | None,
    batch_rows: int,
    rowwise: bool,
) -> tuple[_Conversion, Iterator[pa.RecordBatch]]:
    split_index = _split_index(split, split_name)
    batches = iter_batches(source, file_type, batch_rows)
    first = next(batches, None)
    columns = first.schema.names if first is not None else []
    plan = build_plan(options, columns)
    assigner = SplitAssigner(split) if split is not None else None
    if assigner is not None:
        assigner.check_columns(columns)
    conversion = _Conversion(plan, IssueLog(max_errors_shown), assigner, split_index, rowwise)
    head = [first] if first is not None else []
    return conversion, (b for batch in itertools.chain(head, batches) for b in _bounded(batch))


def iter_lines(
    source: str | os.PathLike[str],
    options: ConversionOptions,
    split: SplitSpec | None = None,
    split_name: str | None = None,
    *,
    file_type: FileType | None = None,
    batch_rows: int = 65536,
    rowwise: bool = False,
) -> Iterator[bytes]:
    """The output lines, as ``convert`` would write them (``rowwise`` forces the per-row path)."""
    conversion, batches = _prepare(source, options, split, split_name, 0, file_type, batch_rows, rowwise)
    for batch in batches:
        for chunk in conversion.chunks(batch):
            for line in bytes(chunk).split(b"\n")[:-1]:
                yield line + b"\n"


def convert(
    source: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    options: ConversionOptions,
    split: SplitSpec | None = None,
    split_name: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_errors_shown: int = 100,
    *,
    file_type: FileType | None = None,
    batch_rows: int = 65536,
    rowwise: bool = False,
) -> ConversionResult:
    """Write ``source`` as JSONL lines of ``options.format_type`` to ``output_path`` (atomically).

    Rows with a problem (empty required cell, answer that is not a JSON object where one is needed,
    bad messages cell) are skipped and reported; problems with the file or the options raise a
    ``DatasetError`` before anything is written. ``progress`` receives the rows read so far.
    """
    conversion, batches = _prepare(
        source, options, split, split_name, max_errors_shown, file_type, batch_rows, rowwise
    )
    with AtomicJsonlWriter(output_path) as writer:
        for batch in batches:
            for chunk in conversion.chunks(batch):
                writer.write(chunk)
            if progress is not None:
                progress(conversion.rows_read)
    plan = conversion.plan
    return ConversionResult(
        rows_read=conversion.rows_read,
        rows_written=conversion.rows_written,
        error_count=conversion.log.count,
        row_errors=conversion.log.shown,
        format_type=options.format_type,
        data_strategy=options.data_strategy,
        mapping=plan.mapping,
        system_message=plan.system.message,
        system_message_template=plan.system.template,
        system_message_column=plan.system.column,
        thinking_instructions=plan.thinking_instructions,
        split=split,
        split_name=split_name,
        split_counts=conversion.split_counts,
        rows_filtered=conversion.rows_filtered,
    )
