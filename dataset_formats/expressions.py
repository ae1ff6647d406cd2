"""Line shapes: JSON skeletons whose leaves are computed from row values.

One shape describes an output line; ``rowwise`` evaluates it for a single row and ``columnar``
compiles it for whole Arrow batches, so both paths share one definition of every format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from dataset_formats.row_errors import RowError

Row = Mapping[str, str | None]


@dataclass(frozen=True)
class Col:
    """A source column's value; ``default`` replaces a null or empty cell."""

    name: str
    default: str = ""

    def value(self, row: Row) -> str:
        return row.get(self.name) or self.default


Part = str | Col


@dataclass(frozen=True)
class Text:
    """Concatenation of literal strings and column values."""

    parts: tuple[Part, ...]

    @classmethod
    def of(cls, *parts: Part | Text) -> Text:
        flat: list[Part] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, Text) else (part,))
        return cls(tuple(p for p in flat if p != ""))

    @classmethod
    def join(cls, separator: str, texts: Iterable[Text]) -> Text:
        pieces: list[Part | Text] = []
        for index, text in enumerate(texts):
            pieces.extend((separator, text) if index else (text,))
        return cls.of(*pieces)

    def columns(self) -> set[str]:
        return {p.name for p in self.parts if isinstance(p, Col)}

    def evaluate(self, row: Row) -> str:
        return "".join(p if isinstance(p, str) else p.value(row) for p in self.parts)


@dataclass(frozen=True)
class JsonObject:
    """The text must be a JSON object; emitted re-encoded compactly, as a string or embedded."""

    text: Text
    column: str | None
    as_string: bool

    def evaluate(self, row: Row) -> Any:
        obj = parse_json_object(self.text.evaluate(row), self.column)
        return msgspec.json.encode(obj).decode() if self.as_string else obj


@dataclass(frozen=True)
class ToolCallId:
    """Deterministic 9-character call id (some templates, e.g. Mistral's, require exactly 9)."""

    text: Text

    def evaluate(self, row: Row) -> str:
        return hashlib.sha256(self.text.evaluate(row).encode()).hexdigest()[:9]


Leaf = Text | JsonObject | ToolCallId


def parse_json_object(raw: str, column: str | None) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RowError(column, f"answer must be a JSON object for this format, but is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RowError(column, f"answer must be a JSON object for this format, found {type(value).__name__}")
    return value


def evaluate_shape(shape: Any, row: Row) -> Any:
    if isinstance(shape, Text | JsonObject | ToolCallId):
        return shape.evaluate(row)
    if isinstance(shape, dict):
        return {key: evaluate_shape(value, row) for key, value in shape.items()}
    if isinstance(shape, list):
        return [evaluate_shape(value, row) for value in shape]
    return shape


def iter_leaves(shape: Any) -> Iterable[Leaf]:
    if isinstance(shape, Text | JsonObject | ToolCallId):
        yield shape
    elif isinstance(shape, dict | list):
        for value in shape.values() if isinstance(shape, dict) else shape:
            yield from iter_leaves(value)
