"""Carry jobs to the end: launch them at their provider and keep them in sync.

Both the create request and the scheduler's tick go through here. A job is worked on only
by whoever holds its lease, so several replicas (or a request and the scheduler) never
launch or sync the same job at once; provider calls happen outside any transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from finetune_service.db.engine import Database
from finetune_service.db.tables import DatasetOutput, Job, utcnow
from finetune_service.errors import ProviderError
from finetune_service.providers.base import (
    CreateJobRequest,
    FineTuneProvider,
    JobStatus,
    ProviderEvent,
    ProviderJob,
    ProviderName,
)
from finetune_service.services.job_state import (
    EventRecorder,
    apply_provider_job,
    known_dedupe_keys,
    move_to,
    record_failure,
    touch,
)
from finetune_service.storage import DatasetStore

log = logging.getLogger(__name__)

FINISHED = [s.value for s in JobStatus if s.finished]
# A job's state and events as its provider reported them.
Fetched = tuple[ProviderJob, list[ProviderEvent]]


@dataclass(frozen=True)
class TickReport:
    job_ids: tuple[str, ...]
    synced: int
    failed: int

    @property
    def claimed(self) -> int:
        return len(self.job_ids)


@dataclass
class JobSync:
    database: Database
    providers: dict[ProviderName, FineTuneProvider]
    store: DatasetStore
    sync_interval: float = 30.0
    concurrency: int = 8
    lease_seconds: float = 300.0
    instance_id: str = field(default_factory=lambda: secrets.token_hex(6))

    @staticmethod
    def _claimable(due_only: bool) -> Any:
        now = utcnow()
        conditions = [
            col(Job.status).notin_(FINISHED),
            or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now),
        ]
        if due_only:
            conditions.append(or_(col(Job.next_sync_at).is_(None), col(Job.next_sync_at) <= now))
        return and_(*conditions)

    async def claim(
        self, limit: int = 500, job_ids: Sequence[str] | None = None, *, due_only: bool = True
    ) -> list[Job]:
        """Lease due jobs to this caller. PostgreSQL skips rows another replica is claiming;
        the outer re-check makes a lost race claim nothing rather than steal a lease."""
        token = f"{self.instance_id}:{secrets.token_hex(4)}"
        due = self._claimable(due_only)
        pick = select(col(Job.id)).where(due).order_by(col(Job.created_at)).limit(limit)
        if job_ids is not None:
            pick = pick.where(col(Job.id).in_(list(job_ids)))
        if not self.database.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        lease_until = utcnow() + timedelta(seconds=self.lease_seconds)
        async with self.database.session() as session:
            rows = await session.scalars(
                update(Job).where(col(Job.id).in_(pick.scalar_subquery()), due)
                .values(lease_owner=token, lease_until=lease_until).returning(Job)
                .execution_options(synchronize_session=False)
            )
            return sorted(rows, key=lambda job: job.created_at)

    async def tick(self) -> TickReport:
        """Advance every due job: launches one by one, syncs fetched concurrently and then written
        in one transaction (per-job transactions made the writers of several processes queue on
        SQLite's lock and kept dashboards' reads waiting behind them)."""
        # Most ticks find nothing due; asking first on the polling connection spares SQLite a write
        # transaction (and its lock) every second per process.
        if not await self.database.polling.scalars(select(col(Job.id)).where(self._claimable(True)).limit(1)):
            return TickReport((), 0, 0)
        jobs = await self.claim()
        limit = asyncio.Semaphore(self.concurrency)
        to_sync = [job for job in jobs if job.provider_job_id is not None]
        launched, fetched = await asyncio.gather(
            asyncio.gather(*(self._guarded(job, limit) for job in jobs if job.provider_job_id is None)),
            asyncio.gather(*(self._fetch_guarded(job, limit) for job in to_sync)),
        )
        try:
            await self._apply(list(zip(to_sync, fetched, strict=True)))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._release([job.id for job in to_sync])
            raise
        ok = sum(launched) + sum(isinstance(outcome, tuple) for outcome in fetched)
        return TickReport(tuple(job.id for job in jobs), ok, len(jobs) - ok)

    async def _guarded(self, job: Job, limit: asyncio.Semaphore) -> bool:
        async with limit:
            try:
                await self.advance(job)
                return True
            except ProviderError:
                return False
            except Exception:
                log.exception("syncing job %s failed unexpectedly", job.id)
                await self._release([job.id])
                return False

    async def _fetch_guarded(self, job: Job, limit: asyncio.Semaphore) -> Fetched | ProviderError | None:
        """None: an unexpected failure, logged; the job is only released and retried next tick."""
        async with limit:
            try:
                return await self._fetch(job)
            except Exception:
                log.exception("syncing job %s failed unexpectedly", job.id)
                return None

    async def advance(self, job: Job) -> None:
        """Launch a job still `creating`, or sync one already at its provider. Caller holds the lease."""
        if job.provider_job_id is None:
            await self.launch(job)
        else:
            await self.sync(job)

    def _provider(self, job: Job) -> FineTuneProvider:
        return self.providers[ProviderName(job.provider)]

    async def _formatted(self, job: Job, output_id: str | None) -> Path:
        async with self.database.session() as session:
            output = await session.get(DatasetOutput, output_id) if output_id else None
        path = self.store.output_path(job.tenant_id, output.dataset_id, output.id) if output else None
        if path is None or not path.exists():
            raise ProviderError("The job's dataset was deleted before the job started; create the job again.",
                                provider=job.provider, status=409)
        return path

    async def _update(self, job_id: str, **values: object) -> None:
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            touch(row)

    async def _release(self, job_ids: list[str]) -> None:
        """Give leases back without a visible change (the version stays)."""
        if job_ids:
            async with self.database.session() as session:
                await session.execute(update(Job).where(col(Job.id).in_(job_ids))
                                      .values(lease_owner=None, lease_until=None)
                                      .execution_options(synchronize_session=False))

    @staticmethod
    async def _record_error(
        session: AsyncSession, row: Job, error: ProviderError, doing: str, recorder: EventRecorder | None = None
    ) -> None:
        if error.retryable:
            await record_failure(session, row, error, doing, recorder)
        else:
            row.error = error.detail
            await move_to(session, row, JobStatus.FAILED, f"{doing} failed: {error.detail}", level="error",
                          recorder=recorder)
            touch(row)
        row.lease_owner = row.lease_until = None

    async def _fail(self, job_id: str, error: ProviderError, doing: str) -> None:
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            assert row is not None
            await self._record_error(session, row, error, doing)

    async def launch(self, job: Job) -> None:
        """Start the job at its provider exactly once: find it first (a crash or timeout may have
        created it already), upload what is not uploaded yet, then create it."""
        provider = self._provider(job)
        doing = f"Starting the job at {provider.display_name}"
        try:
            remote = await provider.find_job(job.id)
            if remote is None:
                training = job.provider_training_file
                if training is None:
                    path = await self._formatted(job, job.training_output_id)
                    training = (await provider.upload_file(path, f"{job.id}-train.jsonl")).id
                    await self._update(job.id, provider_training_file=training)
                validation = job.provider_validation_file
                if validation is None and job.validation_output_id:
                    path = await self._formatted(job, job.validation_output_id)
                    validation = (await provider.upload_file(path, f"{job.id}-validation.jsonl")).id
                    await self._update(job.id, provider_validation_file=validation)
                remote = await provider.create_job(CreateJobRequest(
                    model=job.base_model, training_file_id=training, validation_file_id=validation,
                    parameters=dict(job.parameters), client_reference=job.id,
                    suffix=job.parameters.get("suffix"),
                ))
            events = await provider.list_events(remote.id)
        except ProviderError as error:
            await self._fail(job.id, error, doing)
            raise
        async with self.database.session() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            await EventRecorder(session, row).add(
                "created", f"Created at {provider.display_name} as {remote.id}", dedupe_key="created"
            )
            await apply_provider_job(session, row, remote, events, self.sync_interval)
            row.lease_owner = row.lease_until = None

    async def _fetch(self, job: Job) -> Fetched | ProviderError:
        provider = self._provider(job)
        assert job.provider_job_id is not None
        try:
            return await provider.get_job(job.provider_job_id), await provider.list_events(job.provider_job_id)
        except ProviderError as error:
            return error

    async def _apply(self, outcomes: list[tuple[Job, Fetched | ProviderError | None]]) -> None:
        """Write what was fetched for several jobs in one transaction and release their leases."""
        if not outcomes:
            return
        ids = [job.id for job, _ in outcomes]
        async with self.database.session() as session:
            rows = {row.id: row for row in (await session.execute(select(Job).where(col(Job.id).in_(ids)))).scalars()}
            keys = await known_dedupe_keys(session, ids)
            for job, outcome in outcomes:
                row = rows.get(job.id)
                if row is None:  # deleted while its provider was asked
                    continue
                recorder = EventRecorder(session, row, keys[job.id])
                if isinstance(outcome, ProviderError):
                    doing = f"Syncing from {self._provider(job).display_name}"
                    await self._record_error(session, row, outcome, doing, recorder)
                elif outcome is not None:
                    await apply_provider_job(session, row, *outcome, self.sync_interval, recorder)
                row.lease_owner = row.lease_until = None

    async def sync(self, job: Job) -> None:
        outcome = await self._fetch(job)
        await self._apply([(job, outcome)])
        if isinstance(outcome, ProviderError):
            raise outcome
