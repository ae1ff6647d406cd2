"""Datasets: upload and validate, format into provider JSONL (by split), download, delete.

The `dataset_formats` library does the work; this module owns tenancy, ids, the file
store and the records, and turns the library's errors into the service's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import msgspec
from sqlalchemy import select
from sqlmodel import col

from dataset_formats.convert import ConversionOptions, convert
from dataset_formats.errors import DatasetError, MalformedFile, UnsupportedFileType
from dataset_formats.format_types import DataStrategy, FormatType
from dataset_formats.readers import detect_file_type
from dataset_formats.splits import SPLIT_PRESETS, SplitSpec, parse_split
from dataset_formats.validation import validate
from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import Dataset, DatasetOutput, Job, new_id
from finetune_service.errors import NotFound, UnsupportedMediaType, ValidationFailed
from finetune_service.schemas.datasets import DatasetView, FormatRequest, OutputView
from finetune_service.services.job_state import touch_jobs_where
from finetune_service.services.ownership import require_project_task
from finetune_service.storage import DatasetStore

DEFAULT_SPLIT_PRESET = "train_test_val_80"
# Kiln's presets say "val"; people (and the seed API) also say "validation".
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val"}


@contextmanager
def dataset_errors() -> Iterator[None]:
    """The one place where the library's errors become the service's."""
    try:
        yield
    except UnsupportedFileType as error:
        raise UnsupportedMediaType(error.detail, param="file") from None
    except MalformedFile as error:
        raise ValidationFailed(error.detail, param="file",
                               errors=[{"field": "file", "line": error.line, "row": error.row,
                                        "message": error.detail}]) from None
    except DatasetError as error:
        raise ValidationFailed(error.detail) from None
    except ValueError as error:
        # An unknown format type / strategy value reaching an enum.
        raise ValidationFailed(str(error)) from None


def clean_filename(filename: str | None) -> str:
    """The base name only: clients send local paths (even Windows ones); we never use them."""
    name = PureWindowsPath(filename or "").name
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '/\\:"<>|?*').strip(" .")
    return name[:200] or "upload"


def _enum(kind: type[FormatType] | type[DataStrategy], value: str, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"{field} {value!r} is not supported; use one of: {allowed}", param=field) from None


def split_for(request: FormatRequest) -> tuple[SplitSpec | None, str | None]:
    if request.split_name == "all":
        return None, None
    with dataset_errors():
        spec = parse_split(request.split_preset or DEFAULT_SPLIT_PRESET, seed=request.seed)
        spec = SplitSpec(
            spec.ratios, seed=request.seed, id_column=request.id_column, stratify_column=request.stratify_column,
            filter_column=request.filter_column,
            filter_values=tuple(request.filter_values) if request.filter_values is not None else None,
        )
    name = request.split_name
    if name not in spec.ratios:
        name = _SPLIT_ALIASES.get(name, name)
    if name not in spec.ratios:
        raise ValidationFailed(
            f"split_name {request.split_name!r} is not a part of split {request.split_preset or DEFAULT_SPLIT_PRESET!r}"
            f" ({', '.join(spec.ratios)}); use one of those or 'all'", param="split_name",
        )
    return spec, name


def conversion_options(request: FormatRequest) -> ConversionOptions:
    return ConversionOptions(
        format_type=_enum(FormatType, request.format_type, "format_type"),
        data_strategy=_enum(DataStrategy, request.data_strategy, "data_strategy"),
        system_message=request.system_message,
        system_message_template=request.system_message_template,
        use_system_column=request.use_system_column,
        thinking_instructions=request.thinking_instructions,
        mapping=dict(request.column_mapping or {}),
        user_message_template=request.user_message_template,
    )


@dataclass
class DatasetsService:
    database: Database
    store: DatasetStore
    max_upload_bytes: int

    async def upload(
        self, principal: Principal, filename: str | None, chunks: AsyncIterator[bytes], *,
        description: str | None = None, purpose: str | None = None,
        project_id: str | None = None, task_id: str | None = None,
    ) -> Dataset:
        name = clean_filename(filename)
        with dataset_errors():
            file_type = detect_file_type(name)
        await require_project_task(self.database, principal, project_id, task_id)
        dataset_id = new_id("ds")
        with self.store.staged(suffix=f".{file_type}") as staged:
            upload = await self.store.receive(chunks, staged, self.max_upload_bytes)
            if upload.bytes == 0:
                raise ValidationFailed(f"{name!r} is empty; upload a file with a header row and data", param="file")
            with dataset_errors():
                report = await asyncio.to_thread(validate, staged, file_type)
            final = self.store.original_path(principal.tenant_id, dataset_id, file_type)
            self.store.publish(staged, final)
        report_dict = report.to_dict()
        row = Dataset(
            id=dataset_id, tenant_id=principal.tenant_id, filename=name, file_type=file_type, bytes=upload.bytes,
            sha256=upload.sha256, row_count=report.row_count, columns=list(report.columns),
            mapping=report_dict.get("mapping") or {}, report=report_dict, description=description,
            purpose=purpose, project_id=project_id, task_id=task_id,
        )
        try:
            async with self.database.session() as session:
                session.add(row)
        except BaseException:
            self.store.delete_dataset(principal.tenant_id, dataset_id)
            raise
        return row

    async def get(self, principal: Principal, dataset_id: str) -> Dataset:
        async with self.database.session() as session:
            row = await session.get(Dataset, dataset_id) if isinstance(dataset_id, str) else None
        if row is None or row.tenant_id != principal.tenant_id:
            raise NotFound(
                f"Dataset {dataset_id!r} does not exist; use the 'path' returned by POST /api/finetune/upload-dataset",
                param="dataset_path",
            )
        return row

    async def list_datasets(self, principal: Principal) -> list[Dataset]:
        async with self.database.session() as session:
            rows = await session.execute(
                select(Dataset).where(col(Dataset.tenant_id) == principal.tenant_id)
                .order_by(col(Dataset.created_at).desc())
            )
            return list(rows.scalars())

    async def delete(self, principal: Principal, dataset_id: str) -> None:
        row = await self.get(principal, dataset_id)
        async with self.database.session() as session:
            await touch_jobs_where(session, col(Job.dataset_id) == dataset_id)
            await session.delete(await session.merge(row))
        self.store.delete_dataset(principal.tenant_id, dataset_id)

    def original(self, row: Dataset) -> Path:
        return self.store.original_path(row.tenant_id, row.id, row.file_type)

    async def format(self, principal: Principal, request: FormatRequest) -> DatasetOutput:
        """Formatted JSONL for this request; an identical earlier request's file is reused."""
        dataset = await self.get(principal, request.dataset_path)
        options = conversion_options(request)
        split, split_name = split_for(request)
        key = hashlib.sha256(msgspec.json.encode(request, order="sorted")).hexdigest()
        async with self.database.session() as session:
            existing = (await session.execute(select(DatasetOutput).where(
                col(DatasetOutput.dataset_id) == dataset.id, col(DatasetOutput.options_key) == key,
            ))).scalars().first()
        if existing and self.store.output_path(dataset.tenant_id, dataset.id, existing.id).exists():
            return existing
        output_id = new_id("out")
        path = self.store.output_path(dataset.tenant_id, dataset.id, output_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with dataset_errors():
            result = await asyncio.to_thread(
                convert, self.original(dataset), path, options, split, split_name, None, 100,
                file_type=dataset.file_type,  # type: ignore[arg-type]
            )
        row = DatasetOutput(
            id=output_id, tenant_id=dataset.tenant_id, dataset_id=dataset.id, options_key=key,
            split_name=request.split_name, split=split.to_dict() if split else {"all": True},
            format_type=str(result.format_type), data_strategy=str(result.data_strategy),
            system_message=result.system_message or result.system_message_template
            or (f"{{{result.system_message_column}}}" if result.system_message_column else None),
            thinking_instructions=result.thinking_instructions,
            options={**msgspec.to_builtins(request), "mapping": result.mapping.to_dict(),
                     "split_counts": result.split_counts},
            rows_written=result.rows_written, error_count=result.error_count,
            errors=[issue.to_dict() for issue in result.row_errors], bytes=path.stat().st_size,
        )
        async with self.database.session() as session:
            session.add(row)
        return row

    async def output(self, principal: Principal, output_id: str) -> tuple[DatasetOutput, Path]:
        async with self.database.session() as session:
            row = await session.get(DatasetOutput, output_id)
        if row is None or row.tenant_id != principal.tenant_id:
            raise NotFound(f"Formatted dataset {output_id!r} does not exist", param="output_path")
        return row, self.store.output_path(row.tenant_id, row.dataset_id, row.id)


def dataset_view(row: Dataset) -> DatasetView:
    return DatasetView(
        id=row.id, path=row.id, filename=row.filename, file_type=row.file_type, bytes=row.bytes, sha256=row.sha256,
        row_count=row.row_count, columns=list(row.columns), mapping=dict(row.mapping), description=row.description,
        purpose=row.purpose, project_id=row.project_id, task_id=row.task_id, created_at=row.created_at,
    )


def output_view(row: DatasetOutput) -> OutputView:
    return OutputView(
        id=row.id, dataset_path=row.dataset_id, split_name=row.split_name, split=dict(row.split),
        format_type=row.format_type, data_strategy=row.data_strategy, system_message=row.system_message,
        thinking_instructions=row.thinking_instructions, options=dict(row.options), rows_written=row.rows_written,
        error_count=row.error_count, errors=list(row.errors), bytes=row.bytes, created_at=row.created_at,
    )


def split_presets() -> dict[str, dict[str, float]]:
    return {name: dict(spec.ratios) for name, spec in SPLIT_PRESETS.items()}
