"""What a job list asks for and what the index answers, shared by the database reads and the
change feed's memory."""

from __future__ import annotations

from dataclasses import dataclass

FILTER_COLUMNS = ("status", "provider", "project_id", "task_id")


@dataclass(frozen=True)
class JobFilter:
    """Which of a tenant's jobs a list shows; `after` is the last job id of the previous page."""

    status: str | None = None
    provider: str | None = None
    project_id: str | None = None
    task_id: str | None = None
    limit: int = 50
    after: str | None = None

    @property
    def by_age_only(self) -> bool:
        """Only the tenant and the order decide what is on the page: a job's changes never move it."""
        return not any(getattr(self, column) for column in FILTER_COLUMNS)


@dataclass(frozen=True)
class JobIndex:
    """One page of a job list as (id, version) pairs, newest first, and the total without the cursor."""

    entries: list[tuple[str, int]]
    total: int
    has_more: bool


class CursorNotFound(LookupError):
    """The `after` cursor is not one of the tenant's jobs."""
