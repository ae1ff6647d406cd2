"""Evaluation request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class CreateEvaluationBody(msgspec.Struct, forbid_unknown_fields=True):
    """What to evaluate the job's fine-tuned model on.

    Default: split `test` of the job's own dataset, formatted exactly as the training file was.
    With `dataset_path` (an uploaded dataset id) the whole dataset is used (`split_name` "all")
    unless `split_name` says otherwise. `compare_base` also runs the job's base model.
    """

    split_name: str | None = None
    dataset_path: str | None = None
    split_preset: str | None = None
    column_mapping: dict[str, str] | None = None
    compare_base: bool = False
    limit: int | None = None
    concurrency: int = 4
    max_tokens: int | None = None
    temperature: float = 0.0


class EvaluationView(msgspec.Struct):
    id: str
    job_id: str
    status: str
    provider: str
    model: str
    base_model: str | None
    dataset_path: str | None
    split_name: str
    parameters: dict[str, Any]
    total: int
    done: int
    failed: int
    progress: float
    metrics: dict[str, Any]
    error: str | None
    results_url: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EvaluationEnvelope(msgspec.Struct):
    evaluation: EvaluationView


class EvaluationList(msgspec.Struct):
    job_id: str
    evaluations: list[EvaluationView]
