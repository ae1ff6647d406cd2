"""Streaming CSV/TSV reader on pyarrow, every column read as a string.

pyarrow does the parsing; stdlib ``csv`` only reads the header and, when pyarrow fails or the
input looks unbalanced, finds the exact row and line to report.

pyarrow's streaming reader parses and converts every block on one thread, and checking UTF-8 was
half of that thread's work (1.4 s of 3.2 s per million 1 KB rows), which bounded a whole
conversion. It converts without the check; the check (with the field sizes) runs on other
threads while the next blocks are parsed.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from dataset_formats.errors import MalformedFile
from dataset_formats.limits import MAX_RECORD_BYTES, check_columns, check_field_sizes
from dataset_formats.pipeline import CHECK_WORKERS, ordered_map

# pyarrow reads ahead many blocks, so memory grows with the block size (peak RSS converting the 1 KB-row
# benchmark: 220 MB with 1 MiB blocks, 280 MB with 2 MiB, 410 MB with 4 MiB); each block is one batch,
# and 2 MiB halves the per-batch overhead of 1 MiB (0.4 s of CPU per million rows). A record longer
# than a block makes pyarrow fail; the reader then retries with larger blocks.
DEFAULT_BLOCK_SIZE = 2 << 20
_DELIMITER_CANDIDATES = (",", "\t", ";", "|")


def _block_ends_in_cr(path: Path, block_size: int) -> bool:
    """Whether a ``\r\n`` straddles two read blocks: pyarrow then drops the ``\n`` even inside a
    quoted value (apache/arrow#51368). It reads a native file in blocks of exactly ``block_size``
    bytes, so two bytes per block tell whether the fast native path is safe.
    """
    with open(path, "rb", buffering=0) as f:
        for position in range(block_size - 1, os.fstat(f.fileno()).st_size - 1, block_size):
            f.seek(position)
            if f.read(2) == b"\r\n":
                return True
    return False


class _BoundarySafeStream(io.RawIOBase):
    """File stream whose reads never end in ``\r`` (except at EOF), for files where a native
    block would: handing the ``\r`` to the next read keeps every ``\r\n`` inside one block.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if len(data) > 1 and data.endswith(b"\r"):
            self._file.seek(-1, os.SEEK_CUR)
            data = data[:-1]
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


def _odd_quote_count(path: Path) -> bool:
    odd = False
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            odd ^= bool(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == ord('"')) % 2)
    return odd


def _ends_with_closed_field(path: Path, value: bytes, delimiter: str) -> bool:
    """Whether the file ends with ``value`` as a quoted field that is closed: a delimiter, the
    value in quotes with its quotes doubled, then at most one line break.

    Only for files of two or more columns, where a record of one field is refused, so a field
    left open follows a delimiter. Such a field runs to the end of the file, which then holds the
    value with its quotes doubled right after the opening quote. For that same tail to also read
    as a closed field, the value would have to end in a lone quote and its line break, or the
    opening quote would have to follow a quote instead of the delimiter: neither can happen.
    """
    field = b'"' + value.replace(b'"', b'""') + b'"'
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(size - len(field) - 3, 0))  # room for the delimiter before and a \r\n after
        tail = f.read()
    closed = delimiter.encode() + field
    return any(tail.endswith(closed + ending) for ending in (b"", b"\n", b"\r\n", b"\r"))


def _may_end_in_open_quote(path: Path, last: pa.RecordBatch | None, delimiter: str, width: int) -> bool:
    """pyarrow silently accepts a quote left open at end of file; the last field then runs to the
    end. Cheap hints first (that field spans a line break, or the file does not end with one, and
    the end of the file is not that field closed), then the parity of all quote characters,
    which is even in a file with balanced quotes.
    """
    if last is None or last.num_rows == 0:
        return False
    value = last.column(last.num_columns - 1).view(pa.binary())[-1].as_py() or b""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        ends_with_newline = f.read(1) in (b"\n", b"\r")
    if not (b"\n" in value or b"\r" in value or not ends_with_newline):
        return False
    if width >= 2 and _ends_with_closed_field(path, value, delimiter):
        return False
    return _odd_quote_count(path)


def sniff_delimiter(path: Path) -> str:
    """Pick the candidate delimiter that occurs most often in the header line (default ``,``)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        header = f.readline()
    best = max(_DELIMITER_CANDIDATES, key=header.count)
    return best if header.count(best) else ","


def read_header(path: Path, delimiter: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            header = next(csv.reader(f, delimiter=delimiter, strict=True), None)
        except UnicodeDecodeError as exc:
            raise _locate_bad_utf8(path) from exc
        except csv.Error as exc:
            raise MalformedFile(f"Cannot read the CSV header: {exc}", line=1) from exc
    if not header:
        raise MalformedFile("The CSV file is empty; its first line must name the columns", line=1)
    check_columns(header, "CSV")
    return header


def locate_csv_problem(path: Path, delimiter: str, width: int) -> MalformedFile | None:
    """Re-read with stdlib ``csv`` (strict) and describe the first bad record, if any."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        row = -1  # the header is row 0
        while True:
            start_line = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return None
            except UnicodeDecodeError:
                return _locate_bad_utf8(path)
            except csv.Error as exc:
                reason = (
                    "Unbalanced quote: a quoted field opened here is never closed"
                    if "end of data" in str(exc)
                    else f"Bad quoting: {exc}"
                )
                return MalformedFile(reason, line=start_line, row=row + 1)
            if not record:
                continue  # blank line: skipped by pyarrow too
            row += 1
            if len(record) != width:
                return MalformedFile(
                    f"Expected {width} fields like the header, found {len(record)}", line=start_line, row=row
                )


def _locate_bad_utf8(path: Path) -> MalformedFile:
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return MalformedFile(f"The file is not valid UTF-8 ({exc.reason})", line=line_number)
    return MalformedFile("The file is not valid UTF-8")


def _open(source: str | _BoundarySafeStream, columns: list[str], delimiter: str, block_size: int) -> Any:
    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=True),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()),
            include_columns=columns,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,  # checked by _checked, off the reading thread
        ),
    )


def _checked(path: Path, batch: pa.RecordBatch, rows_before: int) -> pa.RecordBatch:
    check_field_sizes(batch, rows_before)
    try:
        for column in batch.columns:
            column.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise _locate_bad_utf8(path) from exc
    return batch


def iter_csv_batches(
    path: Path,
    delimiter: str | None = None,
    batch_rows: int = 65536,
    block_size: int = DEFAULT_BLOCK_SIZE,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """``columns`` limits conversion to those columns (plus the last one, which the open-quote
    check looks at); every row is still parsed and checked."""
    delimiter = delimiter or sniff_delimiter(path)
    header = read_header(path, delimiter)
    wanted = [name for name in header if columns is None or name in columns or name == header[-1]]
    parsed = _parse(path, delimiter, len(header), wanted, batch_rows, block_size)
    last: pa.RecordBatch | None = None
    for last in ordered_map(lambda item: _checked(path, *item), parsed, CHECK_WORKERS, CHECK_WORKERS + 1):
        yield last
    if _may_end_in_open_quote(path, last, delimiter, len(header)):
        located = locate_csv_problem(path, delimiter, len(header))
        if located is not None:
            raise located


def _parse(
    path: Path, delimiter: str, width: int, wanted: list[str], batch_rows: int, block_size: int
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Batches of at most ``batch_rows`` rows, not yet checked, each with the number of rows before it."""
    done = 0  # rows already handed out, skipped when a retry re-reads the file
    while True:
        # The native file is read without the GIL; the Python stream only where a block ends in \r.
        stream = _BoundarySafeStream(path) if _block_ends_in_cr(path, block_size) else None
        try:
            reader = _open(stream or str(path), wanted, delimiter, block_size)
            seen = 0
            for batch in reader:
                skip = min(max(done - seen, 0), batch.num_rows)
                seen += batch.num_rows
                for start in range(skip, batch.num_rows, batch_rows):
                    piece = batch.slice(start, batch_rows)
                    yield piece, done
                    done += piece.num_rows
            break
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc):
                if block_size < MAX_RECORD_BYTES:
                    block_size = min(block_size * 8, MAX_RECORD_BYTES)
                    continue
                raise MalformedFile(
                    f"A CSV record is longer than {MAX_RECORD_BYTES >> 20} MiB; split very long fields or rows."
                ) from exc
            located = locate_csv_problem(path, delimiter, width)
            if located is not None:
                raise located from exc
            raise MalformedFile(f"Cannot parse the CSV file: {exc}") from exc
        finally:
            if stream is not None:
                stream.close()
    if not done:  # a header-only file still tells callers its columns
        yield pa.RecordBatch.from_pylist([], schema=reader.schema), 0
