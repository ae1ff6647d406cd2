"""Problems confined to one row: the row is skipped and reported, the rest of the file goes on."""

from __future__ import annotations

from dataclasses import dataclass


class RowError(Exception):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


@dataclass(frozen=True, order=True)
class RowIssue:
    row: int  # 1-based data row (the CSV header is not a row)
    column: str | None
    message: str

    def to_dict(self) -> dict[str, int | str | None]:
        return {"row": self.row, "column": self.column, "message": self.message}


class IssueLog:
    """Counts every issue but keeps only the first ``limit`` so memory stays bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.shown: list[RowIssue] = []

    def add(self, issue: RowIssue) -> None:
        self.count += 1
        if len(self.shown) < self.limit:
            self.shown.append(issue)
