"""Checks that ids a client names in a body belong to the caller's tenant."""

from __future__ import annotations

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import Project, Task
from finetune_service.errors import NotFound


async def require_project_task(
    database: Database, principal: Principal, project_id: str | None, task_id: str | None
) -> None:
    """404 unless the project (and the task, inside that project when both are given) are the caller's:
    another tenant's id looks exactly like an unknown one."""
    if project_id is None and task_id is None:
        return
    async with database.session() as session:
        project = await session.get(Project, project_id) if project_id else None
        task = await session.get(Task, task_id) if task_id else None
    if project_id is not None and (project is None or project.tenant_id != principal.tenant_id):
        raise NotFound(f"Project {project_id!r} does not exist", param="project_id")
    outside_project = task is not None and project_id is not None and task.project_id != project_id
    if task_id is not None and (task is None or task.tenant_id != principal.tenant_id or outside_project):
        raise NotFound(f"Task {task_id!r} does not exist" + (f" in project {project_id!r}" if project_id else ""),
                       param="task_id")
