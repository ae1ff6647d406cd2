"""Project, task and dataset-split bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class CreateProject(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str | None = None


class ProjectView(msgspec.Struct):
    id: str
    name: str
    description: str | None
    created_at: datetime


class ProjectEnvelope(msgspec.Struct):
    project: ProjectView


class ProjectList(msgspec.Struct):
    projects: list[ProjectView]


class CreateTask(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str | None = None
    instruction: str | None = None


class TaskView(msgspec.Struct):
    id: str
    project_id: str
    name: str
    description: str | None
    instruction: str | None
    created_at: datetime


class TaskEnvelope(msgspec.Struct):
    task: TaskView


class TaskList(msgspec.Struct):
    tasks: list[TaskView]


class CreateDatasetSplit(msgspec.Struct, forbid_unknown_fields=True):
    dataset_path: str
    name: str
    split_preset: str = "train_test_val_80"
    seed: int = 42
    description: str | None = None
    id_column: str | None = None
    stratify_column: str | None = None
    filter_column: str | None = None
    filter_values: list[str] | None = None


class DatasetSplitView(msgspec.Struct):
    id: str
    project_id: str
    task_id: str
    dataset_path: str
    name: str
    description: str | None
    definition: dict[str, Any]
    counts: dict[str, Any]
    created_at: datetime


class DatasetSplitEnvelope(msgspec.Struct):
    dataset_split: DatasetSplitView


class DatasetSplitList(msgspec.Struct):
    dataset_splits: list[DatasetSplitView]
