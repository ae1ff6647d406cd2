"""Fast path: assemble the JSON lines of a whole Arrow batch with Arrow compute kernels.

The shape is encoded once with placeholder leaves and cut into literal byte segments; each batch
then needs only one escape per leaf and a single ``binary_join_element_wise`` to build every line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from dataset_formats.expressions import Col, Text, iter_leaves
from dataset_formats.json_escape import escape_json_strings

# msgspec renders NUL as \u0000, which no literal of a shape skeleton contains.
_PLACEHOLDER = re.compile(rb'"\\u0000(\d+)\\u0000"')


def _replace_leaves(shape: Any, leaves: list[Text]) -> Any:
    if isinstance(shape, Text) and not shape.columns():
        return shape.evaluate({})  # constant text is escaped once, into the literal segments
    if isinstance(shape, Text):
        leaves.append(shape)
        return f"\x00{len(leaves) - 1}\x00"
    if isinstance(shape, dict):
        return {key: _replace_leaves(value, leaves) for key, value in shape.items()}
    if isinstance(shape, list):
        return [_replace_leaves(value, leaves) for value in shape]
    return shape


@dataclass(frozen=True)
class CompiledShape:
    segments: tuple[str, ...]  # literal JSON between leaves, quotes and final newline included
    leaves: tuple[Text, ...]

    @classmethod
    def compile(cls, shape: Any) -> CompiledShape:
        if not all(isinstance(leaf, Text) for leaf in iter_leaves(shape)):
            raise ValueError("only shapes whose leaves are all Text can be compiled")
        leaves: list[Text] = []
        encoded = msgspec.json.encode(_replace_leaves(shape, leaves)) + b"\n"
        pieces = _PLACEHOLDER.split(encoded)
        order = [int(index) for index in pieces[1::2]]
        if sorted(order) != list(range(len(leaves))):
            raise ValueError("a literal of the shape looks like a leaf placeholder")
        literals = [piece.decode() for piece in pieces[0::2]]
        segments = [literals[0] + '"'] + [f'"{lit}"' for lit in literals[1:-1]] + ['"' + literals[-1]]
        return cls(tuple(segments), tuple(leaves[i] for i in order))

    def build_lines(self, batch: pa.RecordBatch) -> pa.Array:
        """One string per row, each a complete JSON line ending in ``\\n``."""
        escaped: dict[Text, pa.Array] = {}
        arguments: list[Any] = [self.segments[0]]
        for leaf, segment in zip(self.leaves, self.segments[1:], strict=True):
            if leaf not in escaped:
                escaped[leaf] = escape_json_strings(_evaluate(leaf, batch))
            arguments += [escaped[leaf], segment]
        return pc.binary_join_element_wise(*arguments, "")


def _column(part: Col, batch: pa.RecordBatch) -> pa.Array:
    values = batch.column(part.name)
    if not part.default:
        return pc.fill_null(values, "")
    present = pc.fill_null(pc.not_equal(values, ""), False)
    return pc.if_else(present, values, part.default)


def _evaluate(text: Text, batch: pa.RecordBatch) -> pa.Array:
    """Values of a text that has at least one column part."""
    parts = [part if isinstance(part, str) else _column(part, batch) for part in text.parts]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")
