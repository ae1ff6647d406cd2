"""Fine-tuning job routes under /api/finetune (seed API paths)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from finetune_service.api.etag import conditional, etag_of, not_modified
from finetune_service.api.params import IdempotencyKey
from finetune_service.api.streaming import STREAMED
from finetune_service.auth import Principal
from finetune_service.db.job_lists import JobFilter
from finetune_service.providers.base import JobStatus
from finetune_service.schemas.jobs import CheckpointList, CreateJobBody, JobEnvelope, JobEventList, JobList
from finetune_service.services.job_views import job_view
from finetune_service.services.jobs import JobsService, checkpoint_view, event_view

STREAM_POLL_SECONDS = 1.0


def job_etag(job_id: str, version: int) -> str:
    return etag_of([job_id, version])


async def job_list_response(
    request: Request[Principal, Any, Any], principal: Principal, jobs: JobsService, query: JobFilter
) -> Response[JobList | None]:
    """A page of jobs with an ETag over its (id, version) pairs: an unchanged page is a 304 from one
    indexed read, and a changed one loads only the jobs whose version is not cached yet."""
    index = await jobs.index(principal, query)
    index_etag = _list_etag(index.total, index.has_more, index.entries)
    if (unchanged := not_modified(request, index_etag)) is not None:
        return unchanged
    views = await jobs.index_views(principal, index)
    # The body's own ETag: it differs from the index's only if a job changed or went in between.
    loaded = [(v.view.id, v.version) for v in views]
    etag = index_etag if loaded == index.entries else _list_etag(index.total, index.has_more, loaded)
    body = JobList(jobs=[v.view for v in views], total=index.total, has_more=index.has_more,
                   next_cursor=views[-1].view.id if index.has_more and views else None)
    return conditional(request, etag, body)


def _list_etag(total: int, has_more: bool, entries: list[tuple[str, int]]) -> str:
    return etag_of([total, has_more, *(f"{job_id}:{version}" for job_id, version in entries)])


class JobsController(Controller):
    path = "/api/finetune/jobs"
    tags = ["jobs"]

    @post("", status_code=201, summary="Create a fine-tuning job (formats, uploads and starts it)")
    async def create_job(
        self, data: JSONBody[CreateJobBody], principal: NamedDependency[Principal],
        jobs: NamedDependency[JobsService], idempotency_key: IdempotencyKey = None,
    ) -> Response[JobEnvelope]:
        job, replayed = await jobs.create(principal, data, idempotency_key)
        return Response(JobEnvelope(job=job_view(job)), status_code=200 if replayed else 201,
                        headers={"Idempotent-Replayed": "true"} if replayed else {})

    @get("", summary="List jobs (ETag; filters; cursor pagination)")
    async def list_jobs(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        jobs: NamedDependency[JobsService],
        status: FromQuery[JobStatus | None] = None, provider: FromQuery[str | None] = None,
        project_id: FromQuery[str | None] = None, task_id: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        after: FromQuery[str | None] = None, update_status: FromQuery[bool] = False,
    ) -> Response[JobList | None]:
        query = JobFilter(status=status.value if status else None, provider=provider, project_id=project_id,
                          task_id=task_id, limit=limit, after=after)
        if update_status:
            for job in (await jobs.list_jobs(principal, query)).jobs:
                if not JobStatus(job.status).finished:
                    await jobs.refresh(principal, job.id)
        return await job_list_response(request, principal, jobs, query)

    @get("/{job_id:str}", summary="One job (ETag; update_status=true refreshes from the provider)")
    async def get_job(
        self, request: Request[Principal, Any, Any], job_id: FromPath[str], principal: NamedDependency[Principal],
        jobs: NamedDependency[JobsService], update_status: FromQuery[bool] = False,
    ) -> Response[JobEnvelope | None]:
        if update_status:
            await jobs.refresh(principal, job_id)
        version = await jobs.version(principal, job_id)
        if (unchanged := not_modified(request, job_etag(job_id, version))) is not None:
            return unchanged
        current = await jobs.view(principal, job_id, version)
        return conditional(request, job_etag(job_id, current.version), JobEnvelope(job=current.view))

    @post("/{job_id:str}/cancel", status_code=200, summary="Cancel a job")
    async def cancel_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> JobEnvelope:
        return JobEnvelope(job=job_view(await jobs.cancel(principal, job_id)))

    @post("/{job_id:str}/pause", status_code=200, summary="Pause a running job (providers that can: OpenAI)")
    async def pause_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> JobEnvelope:
        return JobEnvelope(job=job_view(await jobs.pause(principal, job_id)))

    @post("/{job_id:str}/resume", status_code=200, summary="Resume a paused job")
    async def resume_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> JobEnvelope:
        return JobEnvelope(job=job_view(await jobs.resume(principal, job_id)))

    @get("/{job_id:str}/events", summary="The job's events, oldest first")
    async def job_events(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> JobEventList:
        return JobEventList(job_id=job_id, events=[event_view(e) for e in await jobs.events(principal, job_id)])

    @get("/{job_id:str}/checkpoints", summary="Checkpoints, where the provider has them")
    async def job_checkpoints(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> CheckpointList:
        checkpoints = await jobs.checkpoints(principal, job_id)
        return CheckpointList(job_id=job_id, checkpoints=[checkpoint_view(c) for c in checkpoints])

    @delete("/{job_id:str}", status_code=200, summary="Delete a finished job's record")
    async def delete_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> dict[str, Any]:
        await jobs.delete(principal, job_id)
        return {"id": job_id, "deleted": True}

    @get("/{job_id:str}/stream", opt=STREAMED,
         summary="Server-Sent Events with the job and its new events until it finishes")
    async def stream_job(
        self, job_id: FromPath[str], principal: NamedDependency[Principal], jobs: NamedDependency[JobsService]
    ) -> ServerSentEvent:
        await jobs.get(principal, job_id)

        async def updates() -> AsyncIterator[ServerSentEventMessage]:
            version, last_event = -1, 0
            while True:
                job = await jobs.get(principal, job_id)
                for event in await jobs.events(principal, job_id):
                    if event.id is not None and event.id > last_event:
                        last_event = event.id
                        yield ServerSentEventMessage(
                            data=msgspec.json.encode(event_view(event)).decode(), event="event", id=str(event.id))
                if job.version != version:
                    version = job.version
                    yield ServerSentEventMessage(data=msgspec.json.encode(job_view(job)).decode(), event="job")
                if JobStatus(job.status).finished:
                    return
                await asyncio.sleep(STREAM_POLL_SECONDS)

        return ServerSentEvent(updates())
