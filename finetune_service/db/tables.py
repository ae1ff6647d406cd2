"""SQLModel tables. Every tenant-owned row carries `tenant_id`; services filter on it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Index, LargeBinary, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone when it stores them)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    # sha256 of the key: keys are 32 random bytes, so a fast hash is enough and lookups stay O(1).
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    revoked: bool = Field(default=False)


def _json(default: Any = None) -> Any:
    factory = (lambda: dict(default)) if isinstance(default, dict) else (lambda: list(default or []))
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


def _opt_ts() -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    id: str = Field(default_factory=lambda: new_id("proj"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    name: str = Field(max_length=200)
    description: str | None = None
    created_at: datetime = _ts()


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    id: str = Field(default_factory=lambda: new_id("task"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    project_id: str = Field(foreign_key="projects.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=200)
    description: str | None = None
    instruction: str | None = None
    created_at: datetime = _ts()


class Dataset(SQLModel, table=True):
    """An uploaded file. `id` is the opaque handle clients send as `dataset_path`."""

    __tablename__ = "datasets"

    id: str = Field(default_factory=lambda: new_id("ds"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    filename: str = Field(max_length=255)
    file_type: str = Field(max_length=16)
    bytes: int
    sha256: str = Field(max_length=64)
    row_count: int
    columns: list[str] = _json([])
    mapping: dict[str, Any] = _json({})
    report: dict[str, Any] = _json({})
    description: str | None = None
    purpose: str | None = Field(default=None, max_length=32)
    project_id: str | None = Field(default=None, foreign_key="projects.id", ondelete="SET NULL")
    task_id: str | None = Field(default=None, foreign_key="tasks.id", ondelete="SET NULL")
    created_at: datetime = _ts()


class DatasetOutput(SQLModel, table=True):
    """A formatted JSONL file made from a dataset; identical requests reuse it (`options_key`)."""

    __tablename__ = "dataset_outputs"

    id: str = Field(default_factory=lambda: new_id("out"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    dataset_id: str = Field(foreign_key="datasets.id", index=True, ondelete="CASCADE")
    options_key: str = Field(index=True, max_length=64)
    split_name: str = Field(max_length=64)
    split: dict[str, Any] = _json({})
    format_type: str = Field(max_length=64)
    data_strategy: str = Field(max_length=64)
    system_message: str | None = None
    thinking_instructions: str | None = None
    options: dict[str, Any] = _json({})
    rows_written: int
    error_count: int
    errors: list[dict[str, Any]] = _json([])
    bytes: int
    created_at: datetime = _ts()


class DatasetSplit(SQLModel, table=True):
    """A named, stored split definition of a dataset inside a project's task."""

    __tablename__ = "dataset_splits"

    id: str = Field(default_factory=lambda: new_id("split"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    project_id: str = Field(foreign_key="projects.id", index=True, ondelete="CASCADE")
    task_id: str = Field(foreign_key="tasks.id", index=True, ondelete="CASCADE")
    dataset_id: str = Field(foreign_key="datasets.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    description: str | None = None
    definition: dict[str, Any] = _json({})
    counts: dict[str, Any] = _json({})
    created_at: datetime = _ts()


class Job(SQLModel, table=True):
    """A fine-tuning job. The row is written (status `creating`) before any provider call."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: str = Field(default_factory=lambda: new_id("ftjob"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    project_id: str | None = Field(default=None, foreign_key="projects.id", index=True, ondelete="SET NULL")
    task_id: str | None = Field(default=None, foreign_key="tasks.id", index=True, ondelete="SET NULL")
    name: str = Field(max_length=200)
    description: str | None = None
    provider: str = Field(max_length=32, index=True)
    base_model: str = Field(max_length=300)
    provider_job_id: str | None = Field(default=None, max_length=300)
    fine_tuned_model: str | None = Field(default=None, max_length=500, index=True)
    dataset_id: str | None = Field(default=None, foreign_key="datasets.id", ondelete="SET NULL")
    split_name: str = Field(max_length=64)
    validation_split: str | None = Field(default=None, max_length=64)
    format_type: str = Field(max_length=64)
    data_strategy: str = Field(max_length=64)
    system_message: str | None = None
    thinking_instructions: str | None = None
    training_output_id: str | None = Field(default=None, max_length=40)
    validation_output_id: str | None = Field(default=None, max_length=40)
    provider_training_file: str | None = Field(default=None, max_length=300)
    provider_validation_file: str | None = Field(default=None, max_length=300)
    parameters: dict[str, Any] = _json({})
    status: str = Field(max_length=32, index=True)
    raw_status: str | None = Field(default=None, max_length=64)
    progress: float | None = None
    metrics: dict[str, Any] = _json({})
    error: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    version: int = Field(default=1)
    sync_failures: int = Field(default=0)
    next_sync_at: datetime | None = _opt_ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _opt_ts()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    started_at: datetime | None = _opt_ts()
    finished_at: datetime | None = _opt_ts()


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "dedupe_key", name="uq_job_events_dedupe"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    tenant_id: str = Field(index=True, max_length=128)
    created_at: datetime = _ts()
    level: str = Field(default="info", max_length=16)
    type: str = Field(max_length=64)
    message: str
    status_from: str | None = Field(default=None, max_length=32)
    status_to: str | None = Field(default=None, max_length=32)
    # Provider event ids (or a status-change marker) so a re-sync never records an event twice.
    dedupe_key: str | None = Field(default=None, max_length=300)


class SavedResponse(SQLModel, table=True):
    """A conversation and its answer, kept only when the client sent `save_response: true`."""

    __tablename__ = "saved_responses"

    id: str = Field(default_factory=lambda: new_id("resp"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    model: str = Field(max_length=500)
    provider: str = Field(max_length=32)
    upstream_model: str = Field(max_length=500)
    messages: list[dict[str, Any]] = _json([])
    choices: list[dict[str, Any]] = _json([])
    usage: dict[str, Any] = _json({})
    parameters: dict[str, Any] = _json({})
    stream: bool = Field(default=False)
    created_at: datetime = _ts()


class Evaluation(SQLModel, table=True):
    """One evaluation run of a job's fine-tuned model (and optionally its base model) over a test set."""

    __tablename__ = "evaluations"

    id: str = Field(default_factory=lambda: new_id("eval"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    job_id: str = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    status: str = Field(max_length=32)
    provider: str = Field(max_length=32)
    model: str = Field(max_length=500)
    base_model: str | None = Field(default=None, max_length=500)
    dataset_id: str | None = Field(default=None, foreign_key="datasets.id", ondelete="SET NULL")
    split_name: str = Field(max_length=64)
    output_id: str | None = Field(default=None, max_length=40)
    parameters: dict[str, Any] = _json({})
    total: int = Field(default=0)
    done: int = Field(default=0)
    failed: int = Field(default=0)
    metrics: dict[str, Any] = _json({})
    error: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    started_at: datetime | None = _opt_ts()
    finished_at: datetime | None = _opt_ts()


class EvaluationResult(SQLModel, table=True):
    """One scored row of an evaluation (downloadable as JSONL)."""

    __tablename__ = "evaluation_results"
    __table_args__ = (UniqueConstraint("evaluation_id", "row_index", name="uq_evaluation_results_row"),)

    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: str = Field(foreign_key="evaluations.id", index=True, ondelete="CASCADE")
    tenant_id: str = Field(index=True, max_length=128)
    row_index: int
    messages: list[dict[str, Any]] = _json([])
    expected: str
    answer: str | None = None
    scores: dict[str, Any] = _json({})
    base_answer: str | None = None
    base_scores: dict[str, Any] = _json({})
    error: str | None = None


# ---------------------------------------------------------------------------------- retrieval


class RetrievalFolder(SQLModel, table=True):
    """A tenant's folder of document collections (the seed API's `apiFolderId`)."""

    __tablename__ = "retrieval_folders"

    id: str = Field(default_factory=lambda: new_id("fld"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    created_at: datetime = _ts()


class RetrievalCollection(SQLModel, table=True):
    """A named set of documents in a folder, embedded with one model. `revision` grows with every
    change to its chunks, so in-memory vector caches (one per replica) know when to reload."""

    __tablename__ = "retrieval_collections"
    __table_args__ = (UniqueConstraint("folder_id", "name", name="uq_retrieval_collections_folder_name"),)

    id: str = Field(default_factory=lambda: new_id("col"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    folder_id: str = Field(foreign_key="retrieval_folders.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=200)
    embedding_model: str = Field(max_length=300)
    dimensions: int | None = None
    revision: int = Field(default=0)
    created_at: datetime = _ts()


class RetrievalDocument(SQLModel, table=True):
    """One indexed source: an uploaded file, a fetched URL, or a crawl of a web site."""

    __tablename__ = "retrieval_documents"

    id: str = Field(default_factory=lambda: new_id("doc"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    folder_id: str = Field(foreign_key="retrieval_folders.id", index=True, ondelete="CASCADE")
    collection_id: str = Field(foreign_key="retrieval_collections.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)  # file, url, crawl
    file_name: str = Field(max_length=500)
    source_url: str | None = Field(default=None, max_length=2048)
    content_type: str = Field(max_length=32)
    bytes: int = Field(default=0)
    status: str = Field(default="pending", max_length=16, index=True)
    error: str | None = None
    tokens: int | None = None
    chunk_count: int = Field(default=0)
    pages: list[dict[str, Any]] = _json([])
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RetrievalChunk(SQLModel, table=True):
    """A searchable piece of a document. `seq` keys the full-text index (SQLite FTS5 rowid);
    `embedding` is the float32 vector as little-endian bytes, in the same row so deletes are atomic."""

    __tablename__ = "retrieval_chunks"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=lambda: new_id("el"), unique=True, max_length=40)
    tenant_id: str = Field(max_length=128)
    folder_id: str = Field(foreign_key="retrieval_folders.id", index=True, ondelete="CASCADE")
    collection_id: str = Field(foreign_key="retrieval_collections.id", index=True, ondelete="CASCADE")
    document_id: str = Field(foreign_key="retrieval_documents.id", index=True, ondelete="CASCADE")
    ordinal: int
    text: str
    page_label: str | None = Field(default=None, max_length=64)
    source_url: str | None = Field(default=None, max_length=2048)
    start_offset: int
    end_offset: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# ---------------------------------------------------------------------------------- RobinApi


class RobinFineTuning(SQLModel, table=True):
    """What the RobinApi client sent when it started a fine-tune (task, Trainer-style params,
    input template, target column); the job itself is an ordinary `jobs` row with the same id."""

    __tablename__ = "robin_fine_tunings"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True, ondelete="CASCADE")
    tenant_id: str = Field(index=True, max_length=128)
    model: str = Field(max_length=500)
    task: str = Field(max_length=64)
    sub_category: str | None = Field(default=None, max_length=200)
    media_id: str = Field(max_length=40)
    description: str | None = None
    params: dict[str, Any] = _json({})
    params_input: dict[str, Any] = _json({})
    params_output: str = Field(max_length=200)
    extension: str | None = Field(default=None, max_length=32)
    applied: dict[str, Any] = _json({})
    not_applied: list[str] = _json([])
    created_at: datetime = _ts()
