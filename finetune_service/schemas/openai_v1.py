"""OpenAI's object shapes for files and fine-tuning jobs, as the openai SDK reads them."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class FileObject(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: Literal["file"] = "file"
    status: str = "processed"
    status_details: str | None = None


class FileList(msgspec.Struct):
    data: list[FileObject]
    has_more: bool
    first_id: str | None
    last_id: str | None
    object: Literal["list"] = "list"


class FileDeleted(msgspec.Struct):
    id: str
    deleted: bool = True
    object: Literal["file"] = "file"


class Hyperparameters(msgspec.Struct, omit_defaults=True):
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    beta: float | Literal["auto"] | None = None


class MethodParams(msgspec.Struct):
    hyperparameters: Hyperparameters | None = None


class Method(msgspec.Struct, omit_defaults=True):
    type: Literal["supervised", "dpo"] = "supervised"
    supervised: MethodParams | None = None
    dpo: MethodParams | None = None


class CreateFineTuningJob(msgspec.Struct):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None


class JobError(msgspec.Struct):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(msgspec.Struct):
    id: str
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    method: dict[str, Any]
    metadata: dict[str, str] | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    object: Literal["fine_tuning.job"] = "fine_tuning.job"


class FineTuningJobList(msgspec.Struct):
    data: list[FineTuningJob]
    has_more: bool
    object: Literal["list"] = "list"


class FineTuningJobEvent(msgspec.Struct):
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"


class FineTuningJobEventList(msgspec.Struct):
    data: list[FineTuningJobEvent]
    has_more: bool
    object: Literal["list"] = "list"


class FineTuningJobCheckpoint(msgspec.Struct):
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"


class FineTuningJobCheckpointList(msgspec.Struct):
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None
    object: Literal["list"] = "list"
