"""Streaming CSV/TSV reader on pyarrow, every column read as a string.

pyarrow does the parsing (multi-threaded); stdlib ``csv`` only reads the header and, when pyarrow
fails or the input looks unbalanced, finds the exact row and line to report.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from dataset_formats.errors import MalformedFile

DEFAULT_BLOCK_SIZE = 16 << 20
_DELIMITER_CANDIDATES = (",", "\t", ";", "|")


class _BoundarySafeStream(io.RawIOBase):
    """File stream whose reads never end in ``\\r`` (except at EOF).

    pyarrow turns each read into one parse block, and drops the ``\\n`` of a quoted ``\\r\\n`` that
    is split across two blocks (apache/arrow#51368). Giving the ``\\r`` back to the next read keeps
    every ``\\r\\n`` inside one block. It also counts quote characters: pyarrow silently accepts a
    quote left open at end of file, and an odd count is the cheap hint to check for that.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self.quote_count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if len(data) > 1 and data.endswith(b"\r"):
            self._file.seek(-1, os.SEEK_CUR)
            data = data[:-1]
        self.quote_count += data.count(b'"')
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


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
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise MalformedFile(f"Column names must be unique; repeated: {duplicates}", line=1)
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


def iter_csv_batches(
    path: Path,
    delimiter: str | None = None,
    batch_rows: int = 65536,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[pa.RecordBatch]:
    delimiter = delimiter or sniff_delimiter(path)
    header = read_header(path, delimiter)
    stream = _BoundarySafeStream(path)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block_size, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        empty = True
        for batch in reader:
            for start in range(0, batch.num_rows, batch_rows):
                empty = False
                yield batch.slice(start, batch_rows)
        if empty:  # a header-only file still tells callers its columns
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    except pa.ArrowInvalid as exc:
        located = locate_csv_problem(path, delimiter, len(header))
        if located is not None:
            raise located from exc
        if "straddle" in str(exc):
            raise MalformedFile(
                f"A record is larger than the {block_size}-byte read block; pass a larger block size"
            ) from exc
        raise MalformedFile(f"Cannot parse the CSV file: {exc}") from exc
    finally:
        stream.close()
    if stream.quote_count % 2:
        located = locate_csv_problem(path, delimiter, len(header))
        if located is not None:
            raise located
