"""Convert a dataset file into provider JSONL, streaming batch by batch into an atomic writer."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dataset_formats.columnar import CompiledShape
from dataset_formats.errors import IncompatibleOptions
from dataset_formats.format_types import DataStrategy, FormatType
from dataset_formats.mapping import ColumnMapping
from dataset_formats.pipeline import ordered_map, prefetch
from dataset_formats.plan import ConversionOptions, LinePlan, build_plan
from dataset_formats.readers import FileType, iter_batches, read_column_names
from dataset_formats.row_errors import IssueLog, RowError, RowIssue
from dataset_formats.rowwise import build_lines
from dataset_formats.splits import SplitAssigner, SplitSpec
from dataset_formats.writer import AtomicJsonlWriter

__all__ = ["ConversionOptions", "ConversionResult", "convert", "iter_lines"]

_WORKERS = 2
_PREFETCH = 8  # batches parsed ahead of rendering
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
    # The buffer total is cheap but counts whole parent buffers for a slice; nbytes is exact.
    if batch.num_rows <= 1 or batch.get_total_buffer_size() <= _MAX_BATCH_BYTES or batch.nbytes <= _MAX_BATCH_BYTES:
        yield batch
        return
    half = batch.num_rows // 2
    yield from _bounded(batch.slice(0, half))
    yield from _bounded(batch.slice(half))


def _is_empty(column: pa.Array) -> np.ndarray:
    """Null or "" cells, read straight from the offsets buffer."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    empty = offsets[1:] == offsets[:-1]
    if column.null_count:
        empty |= column.is_null().to_numpy(zero_copy_only=False)
    return empty


@dataclass(frozen=True)
class _Work:
    """A batch after the in-order bookkeeping, ready to be rendered on any thread."""

    selected: pa.RecordBatch
    rows: np.ndarray  # index in the original batch of each selected row
    offset: int  # rows read before this batch
    end: int  # rows read up to and including this batch
    issues: list[RowIssue]


@dataclass(frozen=True)
class _Rendered:
    chunks: list[bytes | memoryview]
    written: int
    issues: list[RowIssue]
    end: int


class _Conversion:
    """Per-file state: counters, the issue log, the split assigner and the compiled fast path.

    ``prepare`` and ``finish`` run in file order on the calling thread; ``render`` is pure and
    may run on worker threads.
    """

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
        self.rows_done = 0  # rows whose output has been handed out (reading runs ahead of it)
        self.rows_written = 0
        self.rows_filtered = 0
        self.split_counts = dict.fromkeys(assigner.spec.names, 0) if assigner else {}
        self._mapped = [column for column in plan.mapping.to_dict().values() if column] + plan.template_columns

    def prepare(self, batch: pa.RecordBatch) -> _Work:
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
        return _Work(selected, rows, offset, self.rows_read, issues)

    def render(self, work: _Work) -> _Rendered:
        if not len(work.rows):
            return _Rendered([], 0, work.issues, work.end)
        if self.compiled is not None:
            return _Rendered(self.compiled.build(work.selected), len(work.rows), work.issues, work.end)
        encoded, issues = [], list(work.issues)
        for index, line in build_lines(work.selected, self.plan.shape_for):
            if isinstance(line, RowError):
                issues.append(RowIssue(work.offset + int(work.rows[index]) + 1, line.column, line.message))
            else:
                encoded.append(line)
        return _Rendered([b"".join(encoded)], len(encoded), issues, work.end)

    def finish(self, rendered: _Rendered) -> list[bytes | memoryview]:
        self.rows_written += rendered.written
        self.rows_done = rendered.end
        for issue in sorted(rendered.issues):
            self.log.add(issue)
        return rendered.chunks

    def run(self, batches: Iterable[pa.RecordBatch]) -> Iterator[list[bytes | memoryview]]:
        """Each batch's output chunks, in file order; the columnar path renders on worker threads."""
        prepared = (self.prepare(batch) for batch in batches)
        if self.compiled is None:
            rendered: Iterable[_Rendered] = map(self.render, prepared)
        else:
            rendered = ordered_map(self.render, prepared, workers=_WORKERS, max_pending=2 * _WORKERS)
        for item in rendered:
            yield self.finish(item)

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
    known = read_column_names(source, file_type)
    head: list[pa.RecordBatch] = []
    if known is None:  # JSON: the keys of the first batch
        batches = iter_batches(source, file_type, batch_rows)
        head = [first] if (first := next(batches, None)) is not None else []
        known = head[0].schema.names if head else []
    plan = build_plan(options, known)
    assigner = SplitAssigner(split) if split is not None else None
    if assigner is not None:
        assigner.check_columns(known)
    if not head:  # CSV and Parquet: read only the columns the lines and the split need
        needed = [c for c in plan.mapping.to_dict().values() if c] + list(plan.system_text.columns())
        needed += plan.template_columns
        if split is not None:
            needed += [c for c in (split.id_column, split.stratify_column, split.filter_column) if c]
        # The content hash of a split without id or stratify column reads every column.
        whole_rows = split is not None and split.id_column is None and split.stratify_column is None
        batches = iter_batches(source, file_type, batch_rows, columns=None if whole_rows else needed)
    conversion = _Conversion(plan, IssueLog(max_errors_shown), assigner, split_index, rowwise)
    bounded = (b for batch in itertools.chain(head, batches) for b in _bounded(batch))
    return conversion, prefetch(bounded, depth=_PREFETCH)


def iter_lines(
    source: str | os.PathLike[str],
    options: ConversionOptions,
    split: SplitSpec | None = None,
    split_name: str | None = None,
    *,
    file_type: FileType | None = None,
    batch_rows: int = 4096,
    rowwise: bool = False,
) -> Iterator[bytes]:
    """The output lines, as ``convert`` would write them (``rowwise`` forces the per-row path)."""
    conversion, batches = _prepare(source, options, split, split_name, 0, file_type, batch_rows, rowwise)
    for chunks in conversion.run(batches):
        for line in b"".join(chunks).split(b"\n")[:-1]:
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
    batch_rows: int = 4096,
    rowwise: bool = False,
) -> ConversionResult:
    """Write ``source`` as JSONL lines of ``options.format_type`` to ``output_path`` (atomically).

    Rows with a problem (empty required cell, answer that is not a JSON object where one is needed,
    bad messages cell) are skipped and reported; problems with the file or the options raise a
    ``DatasetError`` before anything is written. ``progress`` receives the number of rows processed so far.
    """
    conversion, batches = _prepare(source, options, split, split_name, max_errors_shown, file_type, batch_rows, rowwise)
    with AtomicJsonlWriter(output_path) as writer:
        for chunks in conversion.run(batches):
            for chunk in chunks:
                writer.write(chunk)
            if progress is not None:
                progress(conversion.rows_done)
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
