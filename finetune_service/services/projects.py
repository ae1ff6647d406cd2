"""Projects and their tasks (tenant-owned), and named dataset splits inside a task."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import or_, select
from sqlmodel import col

from dataset_formats.splits import parse_split
from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import DatasetSplit, Job, Project, Task
from finetune_service.errors import NotFound, ValidationFailed
from finetune_service.schemas.datasets import FormatRequest
from finetune_service.schemas.projects import (
    CreateDatasetSplit,
    CreateProject,
    CreateTask,
    DatasetSplitView,
    ProjectView,
    TaskView,
)
from finetune_service.services.datasets import DatasetsService, dataset_errors
from finetune_service.services.job_state import touch_jobs_where


def _name(value: str, field: str) -> str:
    if not value.strip():
        raise ValidationFailed(f"{field} must not be empty", param=field)
    return value.strip()


@dataclass
class ProjectsService:
    database: Database
    datasets: DatasetsService

    async def create_project(self, principal: Principal, body: CreateProject) -> Project:
        row = Project(tenant_id=principal.tenant_id, name=_name(body.name, "name"), description=body.description)
        async with self.database.session() as session:
            session.add(row)
        return row

    async def project(self, principal: Principal, project_id: str) -> Project:
        async with self.database.session() as session:
            row = await session.get(Project, project_id)
        if row is None or row.tenant_id != principal.tenant_id:
            raise NotFound(f"Project {project_id!r} does not exist", param="project_id")
        return row

    async def list_projects(self, principal: Principal) -> list[Project]:
        async with self.database.session() as session:
            rows = await session.execute(select(Project).where(col(Project.tenant_id) == principal.tenant_id)
                                         .order_by(col(Project.created_at)))
            return list(rows.scalars())

    async def delete_project(self, principal: Principal, project_id: str) -> None:
        row = await self.project(principal, project_id)
        async with self.database.session() as session:
            # Its tasks go with it, and with them the jobs' task links.
            tasks = select(col(Task.id)).where(col(Task.project_id) == project_id)
            await touch_jobs_where(session, or_(col(Job.project_id) == project_id, col(Job.task_id).in_(tasks)))
            await session.delete(await session.merge(row))

    async def create_task(self, principal: Principal, project_id: str, body: CreateTask) -> Task:
        await self.project(principal, project_id)
        row = Task(tenant_id=principal.tenant_id, project_id=project_id, name=_name(body.name, "name"),
                   description=body.description, instruction=body.instruction)
        async with self.database.session() as session:
            session.add(row)
        return row

    async def task(self, principal: Principal, project_id: str, task_id: str) -> Task:
        async with self.database.session() as session:
            row = await session.get(Task, task_id)
        if row is None or row.tenant_id != principal.tenant_id or row.project_id != project_id:
            raise NotFound(f"Task {task_id!r} does not exist in project {project_id!r}", param="task_id")
        return row

    async def list_tasks(self, principal: Principal, project_id: str) -> list[Task]:
        await self.project(principal, project_id)
        async with self.database.session() as session:
            rows = await session.execute(select(Task).where(col(Task.project_id) == project_id)
                                         .order_by(col(Task.created_at)))
            return list(rows.scalars())

    async def delete_task(self, principal: Principal, project_id: str, task_id: str) -> None:
        row = await self.task(principal, project_id, task_id)
        async with self.database.session() as session:
            await touch_jobs_where(session, col(Job.task_id) == task_id)
            await session.delete(await session.merge(row))

    async def create_split(
        self, principal: Principal, project_id: str, task_id: str, body: CreateDatasetSplit
    ) -> DatasetSplit:
        await self.task(principal, project_id, task_id)
        request = FormatRequest(
            dataset_path=body.dataset_path, split_name="all", split_preset=body.split_preset, seed=body.seed,
            id_column=body.id_column, stratify_column=body.stratify_column, filter_column=body.filter_column,
            filter_values=body.filter_values,
        )
        with dataset_errors():
            parts = parse_split(body.split_preset, seed=body.seed).names
        # Formatting one part checks the definition against the data and counts every part.
        output = await self.datasets.format(principal, msgspec.structs.replace(request, split_name=parts[0]))
        definition = dict(output.split)
        row = DatasetSplit(
            tenant_id=principal.tenant_id, project_id=project_id, task_id=task_id, dataset_id=body.dataset_path,
            name=_name(body.name, "name"), description=body.description,
            definition={**definition, "preset": body.split_preset},
            counts=dict(output.options.get("split_counts") or {}),
        )
        async with self.database.session() as session:
            session.add(row)
        return row

    async def split(self, principal: Principal, project_id: str, task_id: str, split_id: str) -> DatasetSplit:
        await self.task(principal, project_id, task_id)
        async with self.database.session() as session:
            row = await session.get(DatasetSplit, split_id)
        if row is None or row.tenant_id != principal.tenant_id or row.task_id != task_id:
            raise NotFound(f"Dataset split {split_id!r} does not exist in task {task_id!r}", param="dataset_id")
        return row

    async def list_splits(self, principal: Principal, project_id: str, task_id: str) -> list[DatasetSplit]:
        await self.task(principal, project_id, task_id)
        async with self.database.session() as session:
            rows = await session.execute(select(DatasetSplit).where(col(DatasetSplit.task_id) == task_id)
                                         .order_by(col(DatasetSplit.created_at)))
            return list(rows.scalars())

    def split_request(self, split: DatasetSplit, split_name: str) -> FormatRequest:
        """A format request that reproduces this stored split's part `split_name`."""
        definition = split.definition
        return FormatRequest(
            dataset_path=split.dataset_id, split_name=split_name, split_preset=str(definition.get("preset")),
            seed=int(definition.get("seed", 42)), id_column=definition.get("id_column"),
            stratify_column=definition.get("stratify_column"), filter_column=definition.get("filter_column"),
            filter_values=definition.get("filter_values"),
        )


def project_view(row: Project) -> ProjectView:
    return ProjectView(id=row.id, name=row.name, description=row.description, created_at=row.created_at)


def task_view(row: Task) -> TaskView:
    return TaskView(id=row.id, project_id=row.project_id, name=row.name, description=row.description,
                    instruction=row.instruction, created_at=row.created_at)


def split_view(row: DatasetSplit) -> DatasetSplitView:
    return DatasetSplitView(id=row.id, project_id=row.project_id, task_id=row.task_id, dataset_path=row.dataset_id,
                            name=row.name, description=row.description, definition=dict(row.definition),
                            counts=dict(row.counts), created_at=row.created_at)
