"""Fine-tuning jobs: create once, list, get, cancel, events, checkpoints, delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import timedelta

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.job_lists import CursorNotFound, JobFilter, JobIndex
from finetune_service.db.tables import Job, JobEvent, utcnow
from finetune_service.errors import Conflict, NotFound, ProviderError, ValidationFailed
from finetune_service.providers.base import JobStatus, PausableJobs, ProviderCheckpoint, ProviderName
from finetune_service.schemas.datasets import FormatRequest
from finetune_service.schemas.jobs import CheckpointView, CreateJobBody, JobEventView
from finetune_service.services.catalog import Catalog
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.job_state import EventRecorder, move_to, touch
from finetune_service.services.job_views import JobViewCache, VersionedView
from finetune_service.services.ownership import require_project_task
from finetune_service.services.sync import JobSync


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    total: int
    has_more: bool


def request_hash(body: CreateJobBody) -> str:
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


@dataclass
class JobsService:
    database: Database
    catalog: Catalog
    datasets: DatasetsService
    sync: JobSync
    views: JobViewCache = field(default_factory=JobViewCache)

    async def get(
        self, principal: Principal, job_id: str, *, project_id: str | None = None, task_id: str | None = None
    ) -> Job:
        """The tenant's job; with project/task given, only if it belongs to that task."""
        rows = await self.database.polling.jobs(principal.tenant_id, [job_id])
        job = rows[0] if rows else None
        if (job is None
                or (project_id is not None and job.project_id != project_id)
                or (task_id is not None and job.task_id != task_id)):
            raise NotFound(f"Job {job_id!r} does not exist", param="job_id")
        return job

    async def _by_idempotency_key(self, principal: Principal, key: str) -> Job | None:
        async with self.database.session() as session:
            rows = await session.execute(
                select(Job).where(col(Job.tenant_id) == principal.tenant_id, col(Job.idempotency_key) == key)
            )
            return rows.scalar_one_or_none()

    def _replay(self, existing: Job, digest: str) -> Job:
        if existing.request_hash != digest:
            raise Conflict(
                "This Idempotency-Key was already used for a different job request; "
                "use a new key for a new job.", param="Idempotency-Key",
            )
        return existing

    async def create(
        self, principal: Principal, body: CreateJobBody, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Returns (job, replayed). The row is committed (status `creating`, lease held) before the
        provider is called, so a retry or a crash can never start a second paid job."""
        digest = request_hash(body)
        if idempotency_key:
            existing = await self._by_idempotency_key(principal, idempotency_key)
            if existing is not None:
                return self._replay(existing, digest), True
        provider = self.catalog.provider(body.provider)
        if not provider.configured:
            raise ValidationFailed(
                f"{provider.display_name} is not configured on this service; the operator must set its API key "
                "(see GET /api/finetune/providers).", param="provider",
            )
        if not body.model_name.strip():
            raise ValidationFailed("model_name must name a base model (see GET /api/finetune/models)",
                                   param="model_name")
        if provider.name is ProviderName.SANDBOX:
            known = sorted(m.id for m in provider.static_models())
            if body.model_name not in known:
                raise ValidationFailed(f"Unknown model {body.model_name!r} for {provider.display_name}; "
                                       f"choose one of {', '.join(known)}", param="model_name")
        parameters = self.catalog.validate(body.provider, body.parameters)
        await require_project_task(self.database, principal, body.project_id, body.task_id)
        fmt = FormatRequest(
            dataset_path=body.dataset_path, split_name=body.split_name, split_preset=body.split_preset,
            format_type=body.format_type or "openai_chat_jsonl", data_strategy=body.data_strategy,
            system_message=body.system_message, thinking_instructions=body.thinking_instructions,
            column_mapping=body.column_mapping, user_message_template=body.user_message_template,
        )
        training = await self.datasets.format(principal, fmt)
        if training.rows_written == 0:
            raise ValidationFailed(
                f"Split {body.split_name!r} of dataset {body.dataset_path!r} produced no training example "
                f"({training.error_count} rows had errors); fix the data or choose another split.",
                param="dataset_path",
            )
        validation = None
        if body.validation_split and body.validation_dataset_path:
            raise ValidationFailed("Give validation_split or validation_dataset_path, not both",
                                   param="validation_dataset_path")
        if body.validation_split:
            validation = await self.datasets.format(principal, msgspec.structs.replace(
                fmt, split_name=body.validation_split))
        elif body.validation_dataset_path:
            validation = await self.datasets.format(principal, msgspec.structs.replace(
                fmt, dataset_path=body.validation_dataset_path, split_name="all"))
        job = Job(
            tenant_id=principal.tenant_id, project_id=body.project_id, task_id=body.task_id, name=body.name,
            description=body.description, provider=provider.name.value, base_model=body.model_name,
            dataset_id=training.dataset_id, split_name=body.split_name, validation_split=body.validation_split,
            format_type=training.format_type, data_strategy=training.data_strategy,
            system_message=training.system_message, thinking_instructions=training.thinking_instructions,
            training_output_id=training.id, validation_output_id=validation.id if validation else None,
            parameters=parameters, status=JobStatus.CREATING.value, idempotency_key=idempotency_key,
            request_hash=digest, lease_owner=self.sync.instance_id,
            lease_until=utcnow() + timedelta(seconds=self.sync.lease_seconds),
        )
        try:
            async with self.database.session() as session:
                session.add(job)
                await session.flush()
                await EventRecorder(session, job).add("status", "Job recorded; starting it at the provider",
                                                      status_to=JobStatus.CREATING.value, dedupe_key="status:creating")
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race.
            existing = await self._by_idempotency_key(principal, idempotency_key or "")
            if existing is None:
                raise
            return self._replay(existing, digest), True
        try:
            await self.sync.launch(job)
        except ProviderError as error:
            if not error.retryable:
                raise
        return await self.get(principal, job.id), False

    async def version(self, principal: Principal, job_id: str) -> int:
        """The job's current version, from one indexed read: enough to answer If-None-Match."""
        version = await self.database.polling.job_version(principal.tenant_id, job_id)
        if version is None:
            raise NotFound(f"Job {job_id!r} does not exist", param="job_id")
        return version

    async def view(self, principal: Principal, job_id: str, version: int) -> VersionedView:
        """The job's view at `version`, or newer if it changed since that version was read."""
        cached = self.views.get(principal.tenant_id, job_id, version)
        return cached or self.views.put(await self.get(principal, job_id))

    async def index(self, principal: Principal, query: JobFilter) -> JobIndex:
        """One page of the tenant's jobs as (id, version) pairs, newest first."""
        if query.provider:
            query = replace(query, provider=self.catalog.provider(query.provider).name.value)
        try:
            return await self.database.polling.job_index(principal.tenant_id, query)
        except CursorNotFound:
            raise ValidationFailed(f"Cursor {query.after!r} is not a job of yours", param="after") from None

    async def _rows(self, principal: Principal, job_ids: list[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        return {job.id: job for job in await self.database.polling.jobs(principal.tenant_id, job_ids)}

    async def index_views(self, principal: Principal, index: JobIndex) -> list[VersionedView]:
        """The views of a page, loading only the jobs whose version is not cached yet. A job
        deleted since the index was read is left out."""
        found = {job_id: self.views.get(principal.tenant_id, job_id, version) for job_id, version in index.entries}
        for job in (await self._rows(principal, [i for i, view in found.items() if view is None])).values():
            found[job.id] = self.views.put(job)
        return [view for job_id, _ in index.entries if (view := found[job_id]) is not None]

    async def list_jobs(self, principal: Principal, query: JobFilter) -> JobPage:
        index = await self.index(principal, query)
        rows = await self._rows(principal, [job_id for job_id, _ in index.entries])
        return JobPage(jobs=[rows[job_id] for job_id, _ in index.entries if job_id in rows], total=index.total,
                       has_more=index.has_more)

    async def refresh(self, principal: Principal, job_id: str) -> Job:
        """Sync one job from its provider now (update_status=true)."""
        await self.get(principal, job_id)
        claimed = await self.sync.claim(job_ids=[job_id], due_only=False)
        for job in claimed:
            try:
                await self.sync.advance(job)
            except ProviderError as error:
                if not error.retryable:
                    raise
        return await self.get(principal, job_id)

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        job = await self.get(principal, job_id)
        status = JobStatus(job.status)
        if status.finished:
            raise Conflict(f"Job {job_id} is already {status.value}; only unfinished jobs can be cancelled")
        if job.provider_job_id is None:
            async with self.database.session() as session:
                row = await session.get(Job, job_id)
                assert row is not None
                await move_to(session, row, JobStatus.CANCELLED, "Cancelled before it reached the provider")
                touch(row)
            return await self.get(principal, job_id)
        provider = self.catalog.provider(job.provider)
        try:
            remote = await provider.cancel_job(job.provider_job_id)
        except ProviderError as error:
            # The job may have finished at the provider since our last sync: say so, as if we had known.
            if error.retryable:
                raise
            now = await self.refresh(principal, job_id)
            if JobStatus(now.status).finished:
                raise Conflict(f"Job {job_id} is already {now.status}; only unfinished jobs can be cancelled") \
                    from error
            raise
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            assert row is not None
            target = remote.status if remote.status.rank >= JobStatus.CANCELLING.rank else JobStatus.CANCELLING
            await move_to(session, row, target, "Cancellation requested")
            row.raw_status = remote.raw_status
            touch(row)
        return await self.get(principal, job_id)

    async def pause(self, principal: Principal, job_id: str) -> Job:
        return await self._pause_or_resume(principal, job_id, pause=True)

    async def resume(self, principal: Principal, job_id: str) -> Job:
        return await self._pause_or_resume(principal, job_id, pause=False)

    async def _pause_or_resume(self, principal: Principal, job_id: str, *, pause: bool) -> Job:
        job = await self.get(principal, job_id)
        verb, needed = ("paused", JobStatus.RUNNING) if pause else ("resumed", JobStatus.PAUSED)

        def not_now(status: str) -> Conflict:
            return Conflict(f"Job {job_id} is {status}; only a {needed.value} job can be {verb}.", param="job_id")

        provider = self.catalog.provider(job.provider)
        if not isinstance(provider, PausableJobs):
            able = ", ".join(sorted(p.display_name for p in self.catalog.providers.values()
                                    if isinstance(p, PausableJobs)))
            raise Conflict(f"{provider.display_name} fine-tunes cannot be {verb}; these can: {able}.", param="job_id")
        if job.status != needed or job.provider_job_id is None:
            raise not_now(job.status)
        try:
            remote = await (provider.pause_job if pause else provider.resume_job)(job.provider_job_id)
        except ProviderError as error:
            # The job may have moved on at the provider since our last sync: say so, as if we had known.
            if error.retryable:
                raise
            now = await self.refresh(principal, job_id)
            if now.status != needed:
                raise not_now(now.status) from error
            raise
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            assert row is not None
            await move_to(session, row, remote.status, f"{verb.capitalize()} on request")
            row.raw_status = remote.raw_status
            touch(row)
        return await self.get(principal, job_id)

    async def events(self, principal: Principal, job_id: str) -> list[JobEvent]:
        await self.get(principal, job_id)
        async with self.database.session() as session:
            rows = await session.execute(
                select(JobEvent).where(col(JobEvent.job_id) == job_id).order_by(col(JobEvent.id))
            )
            return list(rows.scalars())

    async def checkpoints(self, principal: Principal, job_id: str) -> list[ProviderCheckpoint]:
        job = await self.get(principal, job_id)
        if job.provider_job_id is None:
            return []
        return await self.catalog.provider(job.provider).list_checkpoints(job.provider_job_id)

    async def delete(self, principal: Principal, job_id: str) -> None:
        job = await self.get(principal, job_id)
        if not JobStatus(job.status).finished:
            raise Conflict(f"Job {job_id} is {job.status}; cancel it and wait until it is finished before deleting")
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            if row is not None:
                await session.delete(row)

    async def by_fine_tuned_model(self, principal: Principal, model: str) -> Job | None:
        async with self.database.session() as session:
            rows = await session.execute(select(Job).where(
                col(Job.tenant_id) == principal.tenant_id, col(Job.fine_tuned_model) == model))
            return rows.scalars().first()


def event_view(event: JobEvent) -> JobEventView:
    assert event.id is not None
    return JobEventView(id=event.id, created_at=event.created_at, level=event.level, type=event.type,
                        message=event.message, status_from=event.status_from, status_to=event.status_to)


def checkpoint_view(checkpoint: ProviderCheckpoint) -> CheckpointView:
    return CheckpointView(id=checkpoint.id, step=checkpoint.step, created_at=checkpoint.created_at,
                          model=checkpoint.model, metrics=checkpoint.metrics)
