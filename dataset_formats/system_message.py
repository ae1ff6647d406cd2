"""Where each line's system message comes from: a fixed text, the row's system column, or a template."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from dataset_formats.errors import IncompatibleOptions, MappingError
from dataset_formats.expressions import Col, Part, Text

DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."


def parse_template(template: str, columns: Sequence[str], label: str = "System message template") -> Text:
    """``"You answer for {product}."`` -> literal and column parts; ``{{``/``}}`` are literal braces."""
    parts: list[Part] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise IncompatibleOptions(f"{label} {template!r} is not valid: {exc}") from exc
    for literal, field, spec, conversion in parsed:
        parts.append(literal)
        if field is None:
            continue
        if spec or conversion:
            raise IncompatibleOptions(
                f"{label} field {{{field}}} may not use a format spec or conversion"
            )
        if field not in columns:
            raise MappingError(
                f"{label} uses column {field!r}, which is not in the file; "
                f"available columns: {list(columns)}"
            )
        parts.append(Col(field))
    return Text.of(*parts)


@dataclass(frozen=True)
class SystemMessageGenerator:
    """Exactly one of ``message``, ``template`` or ``column`` is set.

    With ``column``, rows whose system cell is empty fall back to ``message``'s default.
    """

    message: str | None = None
    template: str | None = None
    column: str | None = None

    @classmethod
    def choose(
        cls,
        system_message: str | None,
        template: str | None,
        system_column: str | None,
        use_system_column: bool,
    ) -> SystemMessageGenerator:
        """Precedence: explicit message, then template, then the system column, then the default."""
        if system_message is not None and template is not None:
            raise IncompatibleOptions("Give either system_message or system_message_template, not both")
        if system_message is not None:
            return cls(message=system_message)
        if template is not None:
            return cls(template=template)
        if use_system_column and system_column:
            return cls(column=system_column)
        return cls(message=DEFAULT_SYSTEM_MESSAGE)

    def text(self, columns: Sequence[str]) -> Text:
        if self.template is not None:
            return parse_template(self.template, columns)
        if self.column is not None:
            return Text.of(Col(self.column, default=DEFAULT_SYSTEM_MESSAGE))
        return Text.of(self.message or "")
