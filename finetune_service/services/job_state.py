"""How a job record changes: provider state applied without ever moving backwards,
each status change and provider event recorded once, and per-job backoff on failure."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from finetune_service.db.tables import Job, JobEvent, utcnow
from finetune_service.errors import ProviderError
from finetune_service.providers.base import JobStatus, ProviderEvent, ProviderJob

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0


def backoff_seconds(failures: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; never sooner than the provider asked."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, failures - 1))
    return max(retry_after or 0.0, random.uniform(ceiling / 2, ceiling))


async def known_dedupe_keys(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, set[str]]:
    """The dedupe keys of several jobs' events in one read (a sync tick applies a batch at once)."""
    keys: dict[str, set[str]] = {job_id: set() for job_id in job_ids}
    rows = await session.execute(select(col(JobEvent.job_id), col(JobEvent.dedupe_key)).where(
        col(JobEvent.job_id).in_(list(job_ids)), col(JobEvent.dedupe_key).isnot(None)))
    for job_id, key in rows:
        if key:
            keys[job_id].add(key)
    return keys


@dataclass
class EventRecorder:
    """Adds a job's events within one session; the job's dedupe keys are read once, not per event
    (or handed in, already read for a whole batch)."""

    session: AsyncSession
    job: Job
    keys: set[str] | None = None

    async def _known(self) -> set[str]:
        if self.keys is None:
            self.keys = (await known_dedupe_keys(self.session, [self.job.id]))[self.job.id]
        return self.keys

    async def add(
        self, type_: str, message: str, *, level: str = "info", dedupe_key: str | None = None,
        status_from: str | None = None, status_to: str | None = None, created_at: datetime | None = None,
    ) -> bool:
        if dedupe_key is not None:
            known = await self._known()
            if dedupe_key in known:
                return False
            known.add(dedupe_key)
        self.session.add(JobEvent(
            job_id=self.job.id, tenant_id=self.job.tenant_id, type=type_, message=message, level=level,
            dedupe_key=dedupe_key, status_from=status_from, status_to=status_to,
            created_at=created_at or utcnow(),
        ))
        return True


def _status(value: str) -> JobStatus:
    return JobStatus(value)


async def move_to(
    session: AsyncSession, job: Job, status: JobStatus, message: str, *, level: str = "info",
    recorder: EventRecorder | None = None,
) -> bool:
    """Record a status change; refuse to move a job backwards (a stale or reordered answer)."""
    current = _status(job.status)
    if status == current or (status.rank < current.rank) or current.finished:
        return False
    # Keyed by the version the job leaves, so two processes recording the same change write one
    # event, and a status the job comes back to (running again after a pause) gets one each time.
    await (recorder or EventRecorder(session, job)).add(
        "status", message, level=level, dedupe_key=f"status:{status.value}@{job.version}", status_from=current.value,
        status_to=status.value,
    )
    job.status = status.value
    now = utcnow()
    if status is JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    if status.finished:
        job.finished_at = job.finished_at or now
        job.next_sync_at = None
    return True


async def apply_provider_job(
    session: AsyncSession, job: Job, remote: ProviderJob, events: list[ProviderEvent], sync_interval: float,
    recorder: EventRecorder | None = None,
) -> None:
    job.provider_job_id = remote.id
    job.raw_status = remote.raw_status
    if remote.progress is not None and (job.progress is None or remote.progress >= job.progress):
        job.progress = remote.progress
    if remote.metrics:
        job.metrics = {**job.metrics, **remote.metrics}
    if remote.fine_tuned_model:
        job.fine_tuned_model = remote.fine_tuned_model
    if remote.error:
        job.error = remote.error
    if remote.started_at and job.started_at is None:
        job.started_at = remote.started_at
    if remote.finished_at and remote.status.finished:
        job.finished_at = remote.finished_at
    recorder = recorder or EventRecorder(session, job)
    for event in events:
        await recorder.add(event.type, event.message, level=event.level, dedupe_key=f"provider:{event.id}",
                           created_at=event.created_at)
    message = {
        JobStatus.SUCCEEDED: f"Fine-tune succeeded: {remote.fine_tuned_model}",
        JobStatus.FAILED: f"Fine-tune failed: {remote.error or remote.raw_status}",
        JobStatus.CANCELLED: "Fine-tune cancelled",
    }.get(remote.status, f"Status is now {remote.status.value} (provider: {remote.raw_status})")
    await move_to(session, job, remote.status, message, level="error" if remote.status is JobStatus.FAILED else "info",
                  recorder=recorder)
    job.sync_failures = 0
    if not _status(job.status).finished:
        job.next_sync_at = utcnow() + timedelta(seconds=sync_interval)
    touch(job)


async def record_failure(
    session: AsyncSession, job: Job, error: ProviderError, doing: str, recorder: EventRecorder | None = None
) -> float:
    """Back off this job only; other jobs keep syncing. Returns the delay chosen."""
    job.sync_failures += 1
    delay = backoff_seconds(job.sync_failures, error.retry_after)
    job.next_sync_at = utcnow() + timedelta(seconds=delay)
    await (recorder or EventRecorder(session, job)).add(
        "retry", f"{doing} failed ({error.status}: {error.detail}); attempt {job.sync_failures}, "
        f"retrying in {delay:.1f}s", level="warning",
    )
    touch(job)
    return delay


def touch(job: Job) -> None:
    job.version += 1
    job.updated_at = utcnow()


async def touch_jobs_where(session: AsyncSession, condition: ColumnElement[bool]) -> None:
    """Bump the jobs that the database is about to change by itself in this transaction (a link
    set to NULL because what it points at is deleted): their versions are what polls compare."""
    for job in await session.scalars(select(Job).where(condition)):
        touch(job)
