"""OpenAI-compatible /v1/fine_tuning/jobs, backed by the jobs service."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from finetune_service.api.params import IdempotencyKey
from finetune_service.auth import Principal
from finetune_service.container import Services
from finetune_service.db.job_lists import JobFilter
from finetune_service.db.tables import Job
from finetune_service.schemas.openai_v1 import (
    CreateFineTuningJob,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobEventList,
    FineTuningJobList,
)
from finetune_service.services.openai_facade import fine_tuning_job, job_body, job_checkpoint, job_event

Limit = Annotated[int, QueryParameter(ge=1, le=100)]


async def _view(services: Services, principal: Principal, job: Job) -> FineTuningJob:
    validation = None
    if job.validation_output_id:
        validation = (await services.datasets.output(principal, job.validation_output_id))[0].dataset_id
    return fine_tuning_job(job, validation)


class OpenAIFineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["openai-compatible"]

    @post("", status_code=200, summary="Create a fine-tuning job (OpenAI-compatible; model = provider/model)")
    async def create_job(
        self, data: JSONBody[CreateFineTuningJob], principal: NamedDependency[Principal],
        services: NamedDependency[Services], idempotency_key: IdempotencyKey = None,
    ) -> FineTuningJob:
        body = job_body(data, services.settings.model_aliases)
        job, _ = await services.jobs.create(principal, body, idempotency_key)
        return await _view(services, principal, job)

    @get("", summary="List fine-tuning jobs, newest first (OpenAI-compatible)")
    async def list_jobs(
        self, principal: NamedDependency[Principal], services: NamedDependency[Services],
        after: FromQuery[str | None] = None, limit: Limit = 20,
    ) -> FineTuningJobList:
        page = await services.jobs.list_jobs(principal, JobFilter(after=after, limit=limit))
        return FineTuningJobList(data=[await _view(services, principal, j) for j in page.jobs],
                                 has_more=page.has_more)

    @get("/{job_id:str}", summary="Retrieve a fine-tuning job (OpenAI-compatible)")
    async def retrieve_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services]
    ) -> FineTuningJob:
        return await _view(services, principal, await services.jobs.refresh(principal, job_id))

    @post("/{job_id:str}/cancel", status_code=200, summary="Cancel a fine-tuning job (OpenAI-compatible)")
    async def cancel_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services]
    ) -> FineTuningJob:
        return await _view(services, principal, await services.jobs.cancel(principal, job_id))

    @post("/{job_id:str}/pause", status_code=200, summary="Pause a running fine-tuning job (OpenAI-compatible)")
    async def pause_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services]
    ) -> FineTuningJob:
        return await _view(services, principal, await services.jobs.pause(principal, job_id))

    @post("/{job_id:str}/resume", status_code=200, summary="Resume a paused fine-tuning job (OpenAI-compatible)")
    async def resume_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services]
    ) -> FineTuningJob:
        return await _view(services, principal, await services.jobs.resume(principal, job_id))

    @get("/{job_id:str}/events", summary="A job's events, newest first (OpenAI-compatible)")
    async def list_events(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services],
        after: FromQuery[str | None] = None, limit: Limit = 20,
    ) -> FineTuningJobEventList:
        events = [job_event(e) for e in reversed(await services.jobs.events(principal, job_id))]
        if after:
            ids = [e.id for e in events]
            events = events[ids.index(after) + 1:] if after in ids else []
        return FineTuningJobEventList(data=events[:limit], has_more=len(events) > limit)

    @get("/{job_id:str}/checkpoints", summary="A job's checkpoints (OpenAI-compatible)")
    async def list_checkpoints(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], services: NamedDependency[Services],
        after: FromQuery[str | None] = None, limit: Limit = 10,
    ) -> FineTuningJobCheckpointList:
        job = await services.jobs.get(principal, job_id)
        checkpoints = [job_checkpoint(job, c) for c in await services.jobs.checkpoints(principal, job_id)]
        if after:
            ids = [c.id for c in checkpoints]
            checkpoints = checkpoints[ids.index(after) + 1:] if after in ids else []
        page = checkpoints[:limit]
        return FineTuningJobCheckpointList(data=page, has_more=len(checkpoints) > limit,
                                           first_id=page[0].id if page else None,
                                           last_id=page[-1].id if page else None)
