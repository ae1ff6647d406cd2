"""Streaming JSONL and JSON-array readers producing string-typed Arrow batches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from dataset_formats.errors import MalformedFile

_CHUNK = 1 << 20
_WHITESPACE = " \t\r\n"


def _cell(value: Any) -> str | None:
    """Strings stay as they are; anything else (numbers, lists, objects) becomes its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def records_to_batch(records: list[dict[str, Any]]) -> pa.RecordBatch:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return pa.RecordBatch.from_arrays(
        [pa.array([_cell(r.get(name)) for r in records], type=pa.string()) for name in names],
        names=list(names),
    )


def batched(records: Iterable[dict[str, Any]], batch_rows: int) -> Iterator[pa.RecordBatch]:
    pending: list[dict[str, Any]] = []
    for record in records:
        pending.append(record)
        if len(pending) == batch_rows:
            yield records_to_batch(pending)
            pending = []
    if pending:
        yield records_to_batch(pending)


def iter_jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    """One object per line. Lines end at ``\\n`` only: U+2028/U+2029 are ordinary content."""
    decoder = msgspec.json.Decoder()
    with open(path, "rb") as f:
        line_number = 0
        for raw in f:  # binary iteration splits on b"\n" alone
            line_number += 1
            if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                value = decoder.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise _line_problem(raw, exc, line_number) from exc
            if not isinstance(value, dict):
                raise MalformedFile(f"Each line must be a JSON object, found {type(value).__name__}", line=line_number)
            yield value


def _line_problem(raw: bytes, exc: Exception, line_number: int) -> MalformedFile:
    """Bad bytes are named as such, the same way whichever layer (msgspec or the codec) noticed them."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return MalformedFile(f"The file is not valid UTF-8 ({bad.reason})", line=line_number)
    return MalformedFile(f"Invalid JSON: {exc}", line=line_number)


class _TextBuffer:
    """A sliding window over a text file, refilled on demand so memory stays bounded."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, encoding="utf-8-sig")  # noqa: SIM115 - closed by close()
        self.text = ""
        self.pos = 0
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self._file.read(_CHUNK)
        self.eof = not chunk
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return bool(chunk)

    def peek(self) -> str:
        """Next non-whitespace character ('' at end of file)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self.fill():
                return self.text[self.pos : self.pos + 1]

    def close(self) -> None:
        self._file.close()


def iter_json_array_records(path: Path) -> Iterator[dict[str, Any]]:
    """Objects of a top-level JSON array, decoded one at a time."""
    decoder = json.JSONDecoder()
    buffer = _TextBuffer(path)
    try:
        if buffer.peek() != "[":
            raise MalformedFile("A .json file must hold an array of objects; use .jsonl for one object a line")
        buffer.pos += 1
        row = 0
        while True:
            next_char = buffer.peek()
            if next_char == "]":
                return
            if row and next_char != ",":
                raise MalformedFile("Expected ',' or ']' between array items", row=row + 1)
            if row:
                buffer.pos += 1
                buffer.peek()
            row += 1
            while True:
                try:
                    value, buffer.pos = decoder.raw_decode(buffer.text, buffer.pos)
                    break
                except json.JSONDecodeError as exc:
                    if not buffer.fill():
                        raise MalformedFile(f"Invalid JSON: {exc.msg}", row=row) from exc
            if not isinstance(value, dict):
                raise MalformedFile(f"Array items must be objects, found {type(value).__name__}", row=row)
            yield value
    except UnicodeDecodeError as exc:
        raise MalformedFile(f"The file is not valid UTF-8 ({exc.reason})") from exc
    finally:
        buffer.close()
