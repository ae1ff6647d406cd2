"""Dataset request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class FormatRequest(msgspec.Struct, forbid_unknown_fields=True):
    """How to turn a dataset (or one split of it) into provider JSONL.

    `split_name="all"` means every row; otherwise rows are assigned by `split_preset`
    (a Kiln preset name or `name=ratio,...`; default `train_test_val_80`) with `seed`.
    """

    dataset_path: str
    split_name: str = "train"
    split_preset: str | None = None
    seed: int = 42
    format_type: str = "openai_chat_jsonl"
    data_strategy: str = "final_only"
    system_message: str | None = None
    system_message_template: str | None = None
    use_system_column: bool = True
    thinking_instructions: str | None = None
    column_mapping: dict[str, str] | None = None
    # Build each user turn from the row, e.g. "{question} ({product})", instead of a user column.
    user_message_template: str | None = None
    id_column: str | None = None
    stratify_column: str | None = None
    filter_column: str | None = None
    filter_values: list[str] | None = None


class RowErrorView(msgspec.Struct):
    row: int
    column: str | None
    message: str


class DatasetView(msgspec.Struct):
    id: str
    path: str
    filename: str
    file_type: str
    bytes: int
    sha256: str
    row_count: int
    columns: list[str]
    mapping: dict[str, Any]
    description: str | None
    purpose: str | None
    project_id: str | None
    task_id: str | None
    created_at: datetime


class UploadResponse(msgspec.Struct):
    filename: str
    path: str
    dataset: DatasetView
    report: dict[str, Any]


class DatasetDetail(msgspec.Struct):
    dataset: DatasetView
    report: dict[str, Any]


class DatasetList(msgspec.Struct):
    datasets: list[DatasetView]


class OutputView(msgspec.Struct):
    id: str
    dataset_path: str
    split_name: str
    split: dict[str, Any]
    format_type: str
    data_strategy: str
    system_message: str | None
    thinking_instructions: str | None
    options: dict[str, Any]
    rows_written: int
    error_count: int
    errors: list[dict[str, Any]]
    bytes: int
    created_at: datetime


class FormatResponse(msgspec.Struct):
    output_path: str
    output: OutputView


class FormatTypeView(msgspec.Struct):
    id: str
    description: str
    example: dict[str, Any]


class FormatTypeList(msgspec.Struct):
    format_types: list[FormatTypeView]
    data_strategies: list[str]
    split_presets: dict[str, dict[str, float]]
