"""Job request and response bodies (the seed API's shapes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class CreateJobBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    provider: str
    model_name: str
    dataset_path: str
    parameters: dict[str, Any] = {}
    description: str | None = None
    system_message: str | None = None
    thinking_instructions: str | None = None
    split_name: str = "train"
    validation_split: str | None = None
    # A separate validation dataset (every row of it), instead of a split of dataset_path.
    validation_dataset_path: str | None = None
    split_preset: str | None = None
    format_type: str | None = None
    data_strategy: str = "final_only"
    column_mapping: dict[str, str] | None = None
    # Build each user turn from the row with this template ("{question}") instead of a user column.
    user_message_template: str | None = None
    project_id: str | None = None
    task_id: str | None = None


class JobView(msgspec.Struct):
    id: str
    name: str
    description: str | None
    provider: str
    model_name: str
    provider_job_id: str | None
    fine_tuned_model: str | None
    status: str
    raw_status: str | None
    progress: float | None
    metrics: dict[str, Any]
    error: str | None
    dataset_path: str | None
    split_name: str
    validation_split: str | None
    format_type: str
    data_strategy: str
    system_message: str | None
    thinking_instructions: str | None
    training_file: str | None
    validation_file: str | None
    parameters: dict[str, Any]
    project_id: str | None
    task_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEnvelope(msgspec.Struct):
    job: JobView


class JobList(msgspec.Struct):
    jobs: list[JobView]
    total: int
    has_more: bool
    next_cursor: str | None


class JobEventView(msgspec.Struct):
    id: int
    created_at: datetime
    level: str
    type: str
    message: str
    status_from: str | None
    status_to: str | None


class JobEventList(msgspec.Struct):
    job_id: str
    events: list[JobEventView]


class CheckpointView(msgspec.Struct):
    id: str
    step: int | None
    created_at: datetime | None
    model: str | None
    metrics: dict[str, Any]


class CheckpointList(msgspec.Struct):
    job_id: str
    checkpoints: list[CheckpointView]
