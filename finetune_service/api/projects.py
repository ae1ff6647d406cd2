"""Projects -> tasks -> dataset splits and fine-tunes (seed API paths under /api/finetune)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import File

from finetune_service.api.datasets import download_name
from finetune_service.api.jobs import job_list_response
from finetune_service.api.params import IdempotencyKey
from finetune_service.auth import Principal
from finetune_service.db.job_lists import JobFilter
from finetune_service.schemas.jobs import CreateJobBody, JobEnvelope, JobList
from finetune_service.schemas.projects import (
    CreateDatasetSplit,
    CreateProject,
    CreateTask,
    DatasetSplitEnvelope,
    DatasetSplitList,
    ProjectEnvelope,
    ProjectList,
    TaskEnvelope,
    TaskList,
)
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.job_views import job_view
from finetune_service.services.jobs import JobsService
from finetune_service.services.projects import ProjectsService, project_view, split_view, task_view

TASK = "/projects/{project_id:str}/tasks/{task_id:str}"


class ProjectsController(Controller):
    path = "/api/finetune"
    tags = ["projects"]

    @post("/projects", status_code=201, summary="Create a project")
    async def create_project(
        self, data: JSONBody[CreateProject], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> ProjectEnvelope:
        return ProjectEnvelope(project=project_view(await projects.create_project(principal, data)))

    @get("/projects", summary="Your projects")
    async def list_projects(
        self, principal: NamedDependency[Principal], projects: NamedDependency[ProjectsService]
    ) -> ProjectList:
        return ProjectList(projects=[project_view(p) for p in await projects.list_projects(principal)])

    @get("/projects/{project_id:str}", summary="One project")
    async def get_project(
        self, project_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> ProjectEnvelope:
        return ProjectEnvelope(project=project_view(await projects.project(principal, project_id)))

    @delete("/projects/{project_id:str}", status_code=200, summary="Delete a project and its tasks")
    async def delete_project(
        self, project_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> dict[str, Any]:
        await projects.delete_project(principal, project_id)
        return {"id": project_id, "deleted": True}

    @post("/projects/{project_id:str}/tasks", status_code=201, summary="Create a task in a project")
    async def create_task(
        self, project_id: FromPath[str], data: JSONBody[CreateTask], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> TaskEnvelope:
        return TaskEnvelope(task=task_view(await projects.create_task(principal, project_id, data)))

    @get("/projects/{project_id:str}/tasks", summary="A project's tasks")
    async def list_tasks(
        self, project_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> TaskList:
        return TaskList(tasks=[task_view(t) for t in await projects.list_tasks(principal, project_id)])

    @get(TASK, summary="One task")
    async def get_task(
        self, project_id: FromPath[str], task_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> TaskEnvelope:
        return TaskEnvelope(task=task_view(await projects.task(principal, project_id, task_id)))

    @delete(TASK, status_code=200, summary="Delete a task")
    async def delete_task(
        self, project_id: FromPath[str], task_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> dict[str, Any]:
        await projects.delete_task(principal, project_id, task_id)
        return {"id": task_id, "deleted": True}

    @post(f"{TASK}/dataset_splits", status_code=201, summary="Store a named, seeded split of a dataset")
    async def create_split(
        self, project_id: FromPath[str], task_id: FromPath[str], data: JSONBody[CreateDatasetSplit],
        principal: NamedDependency[Principal], projects: NamedDependency[ProjectsService],
    ) -> DatasetSplitEnvelope:
        return DatasetSplitEnvelope(dataset_split=split_view(await projects.create_split(principal, project_id,
                                                                                        task_id, data)))

    @get(f"{TASK}/dataset_splits", summary="The task's dataset splits")
    async def list_splits(
        self, project_id: FromPath[str], task_id: FromPath[str], principal: NamedDependency[Principal],
        projects: NamedDependency[ProjectsService],
    ) -> DatasetSplitList:
        rows = await projects.list_splits(principal, project_id, task_id)
        return DatasetSplitList(dataset_splits=[split_view(r) for r in rows])

    @get("/download_dataset_jsonl", summary="One part of a stored split as JSONL (Kiln-compatible query)")
    async def download_dataset_jsonl(
        self, project_id: FromQuery[str], task_id: FromQuery[str], dataset_id: FromQuery[str],
        principal: NamedDependency[Principal], projects: NamedDependency[ProjectsService],
        datasets: NamedDependency[DatasetsService],
        split_name: FromQuery[str] = "train", format_type: FromQuery[str] = "openai_chat_jsonl",
        data_strategy: FromQuery[str] = "final_only", system_message_generator: FromQuery[str | None] = None,
        custom_system_message: FromQuery[str | None] = None,
        custom_thinking_instructions: FromQuery[str | None] = None,
    ) -> File:
        split = await projects.split(principal, project_id, task_id, dataset_id)
        template = system_message_generator if system_message_generator and "{" in system_message_generator else None
        request = msgspec.structs.replace(
            projects.split_request(split, split_name), format_type=format_type, data_strategy=data_strategy,
            system_message=custom_system_message, system_message_template=template,
            use_system_column=system_message_generator == "column",
            thinking_instructions=custom_thinking_instructions,
        )
        output = await datasets.format(principal, request)
        _, path = await datasets.output(principal, output.id)
        dataset = await datasets.get(principal, split.dataset_id)
        return File(path=path, filename=download_name(dataset.filename, split_name, output.format_type),
                    media_type="application/jsonl", content_disposition_type="attachment")

    @post(f"{TASK}/finetunes", status_code=201, summary="Create a fine-tune inside a task")
    async def create_finetune(
        self, project_id: FromPath[str], task_id: FromPath[str], data: JSONBody[CreateJobBody],
        principal: NamedDependency[Principal], projects: NamedDependency[ProjectsService],
        jobs: NamedDependency[JobsService], idempotency_key: IdempotencyKey = None,
    ) -> Response[JobEnvelope]:
        await projects.task(principal, project_id, task_id)
        body = msgspec.structs.replace(data, project_id=project_id, task_id=task_id)
        job, replayed = await jobs.create(principal, body, idempotency_key)
        return Response(JobEnvelope(job=job_view(job)), status_code=200 if replayed else 201)

    @get(f"{TASK}/finetunes", summary="The task's fine-tunes (ETag)")
    async def list_finetunes(
        self, request: Request[Principal, Any, Any], project_id: FromPath[str], task_id: FromPath[str],
        principal: NamedDependency[Principal], projects: NamedDependency[ProjectsService],
        jobs: NamedDependency[JobsService], limit: Annotated[int, QueryParameter(ge=1, le=500)] = 500,
        after: FromQuery[str | None] = None,
    ) -> Response[JobList | None]:
        await projects.task(principal, project_id, task_id)
        query = JobFilter(project_id=project_id, task_id=task_id, limit=limit, after=after)
        return await job_list_response(request, principal, jobs, query)

    @get(f"{TASK}/finetunes/{{finetune_id:str}}", summary="One fine-tune of the task")
    async def get_finetune(
        self, project_id: FromPath[str], task_id: FromPath[str], finetune_id: FromPath[str],
        principal: NamedDependency[Principal], jobs: NamedDependency[JobsService],
        update_status: FromQuery[bool] = False,
    ) -> JobEnvelope:
        job = await jobs.get(principal, finetune_id, project_id=project_id, task_id=task_id)
        if update_status:
            job = await jobs.refresh(principal, finetune_id)
        return JobEnvelope(job=job_view(job))

    @post(f"{TASK}/finetunes/{{finetune_id:str}}/cancel", status_code=200, summary="Cancel a fine-tune")
    async def cancel_finetune(
        self, project_id: FromPath[str], task_id: FromPath[str], finetune_id: FromPath[str],
        principal: NamedDependency[Principal], jobs: NamedDependency[JobsService],
    ) -> JobEnvelope:
        await jobs.get(principal, finetune_id, project_id=project_id, task_id=task_id)
        return JobEnvelope(job=job_view(await jobs.cancel(principal, finetune_id)))
