"""Fine-tuning jobs: create once, list, get, cancel, events, checkpoints, delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import Job, JobEvent, utcnow
from finetune_service.errors import Conflict, NotFound, ProviderError, ValidationFailed
from finetune_service.providers.base import JobStatus, ProviderCheckpoint, ProviderName
from finetune_service.schemas.datasets import FormatRequest
from finetune_service.schemas.jobs import CheckpointView, CreateJobBody, JobEventView, JobView
from finetune_service.services.catalog import Catalog
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.job_state import EventRecorder, move_to, touch
from finetune_service.services.ownership import require_project_task
from finetune_service.services.sync import JobSync


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    provider: str | None = None
    project_id: str | None = None
    task_id: str | None = None
    limit: int = 50
    after: str | None = None


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

    async def get(
        self, principal: Principal, job_id: str, *, project_id: str | None = None, task_id: str | None = None
    ) -> Job:
        """The tenant's job; with project/task given, only if it belongs to that task."""
        async with self.database.session() as session:
            job = await session.get(Job, job_id)
        if (job is None or job.tenant_id != principal.tenant_id
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

    async def list_jobs(self, principal: Principal, query: JobFilter) -> JobPage:
        conditions: list[Any] = [col(Job.tenant_id) == principal.tenant_id]
        if query.status:
            conditions.append(col(Job.status) == query.status)
        if query.provider:
            conditions.append(col(Job.provider) == self.catalog.provider(query.provider).name.value)
        if query.project_id:
            conditions.append(col(Job.project_id) == query.project_id)
        if query.task_id:
            conditions.append(col(Job.task_id) == query.task_id)
        async with self.database.session() as session:
            total = (await session.execute(select(func.count()).select_from(Job).where(*conditions))).scalar_one()
            page = select(Job).where(*conditions)
            if query.after:
                anchor = await session.get(Job, query.after)
                if anchor is None or anchor.tenant_id != principal.tenant_id:
                    raise ValidationFailed(f"Cursor {query.after!r} is not a job of yours", param="after")
                page = page.where(
                    (col(Job.created_at) < anchor.created_at)
                    | ((col(Job.created_at) == anchor.created_at) & (col(Job.id) < anchor.id))
                )
            page = page.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(query.limit + 1)
            rows = list((await session.execute(page)).scalars())
        return JobPage(jobs=rows[: query.limit], total=int(total), has_more=len(rows) > query.limit)

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
        remote = await provider.cancel_job(job.provider_job_id)
        async with self.database.session() as session:
            row = await session.get(Job, job_id)
            assert row is not None
            target = remote.status if remote.status.rank >= JobStatus.CANCELLING.rank else JobStatus.CANCELLING
            await move_to(session, row, target, "Cancellation requested")
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


def job_view(job: Job) -> JobView:
    return JobView(
        id=job.id, name=job.name, description=job.description, provider=job.provider, model_name=job.base_model,
        provider_job_id=job.provider_job_id, fine_tuned_model=job.fine_tuned_model, status=job.status,
        raw_status=job.raw_status, progress=job.progress, metrics=job.metrics, error=job.error,
        dataset_path=job.dataset_id, split_name=job.split_name, validation_split=job.validation_split,
        format_type=job.format_type, data_strategy=job.data_strategy, system_message=job.system_message,
        thinking_instructions=job.thinking_instructions, training_file=job.training_output_id,
        validation_file=job.validation_output_id, parameters=job.parameters, project_id=job.project_id,
        task_id=job.task_id, created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
        finished_at=job.finished_at,
    )


def event_view(event: JobEvent) -> JobEventView:
    assert event.id is not None
    return JobEventView(id=event.id, created_at=event.created_at, level=event.level, type=event.type,
                        message=event.message, status_from=event.status_from, status_to=event.status_to)


def checkpoint_view(checkpoint: ProviderCheckpoint) -> CheckpointView:
    return CheckpointView(id=checkpoint.id, step=checkpoint.step, created_at=checkpoint.created_at,
                          model=checkpoint.model, metrics=checkpoint.metrics)
