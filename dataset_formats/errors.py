"""Errors raised by dataset_formats.

Every error carries a ``detail`` written for the person who has to fix the input, so the REST
layer and the CLI can show it verbatim.
"""

from __future__ import annotations


class DatasetError(Exception):
    """Base class: something about the dataset or the options must be changed by the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsupportedFileType(DatasetError):
    """The file name does not end in an extension we can read."""


class MalformedFile(DatasetError):
    """The file cannot be parsed; ``line`` (physical line) and ``row`` (data record) locate it when known."""

    def __init__(self, detail: str, line: int | None = None, row: int | None = None) -> None:
        where = ", ".join(f"{name} {value}" for name, value in (("line", line), ("row", row)) if value)
        super().__init__(f"{detail} ({where})" if where else detail)
        self.line = line
        self.row = row


class IncompatibleOptions(DatasetError):
    """The requested format, strategy, mapping and options cannot produce valid lines together."""


class MappingError(DatasetError):
    """A column named in a mapping or template is absent, or several columns fit one role."""
