"""Dataset routes under /api/finetune (seed API paths)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody
from litestar.response import File

from dataset_formats.format_types import FORMAT_TYPE_INFO, DataStrategy
from finetune_service.auth import Principal
from finetune_service.errors import ValidationFailed
from finetune_service.schemas.datasets import (
    DatasetDetail,
    DatasetList,
    FormatRequest,
    FormatResponse,
    FormatTypeList,
    FormatTypeView,
    UploadResponse,
)
from finetune_service.services.datasets import DatasetsService, dataset_view, output_view, split_presets

CHUNK = 1 << 20


class UploadForm(msgspec.Struct):
    file: UploadFile | None = None
    description: str | None = None
    purpose: str | None = None
    project_id: str | None = None
    task_id: str | None = None


async def upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


def download_name(filename: str, split_name: str, format_type: str) -> str:
    stem = filename.rsplit(".", 1)[0] or "dataset"
    return f"{stem}-{split_name}-{format_type}.jsonl"


class DatasetsController(Controller):
    path = "/api/finetune"
    tags = ["datasets"]

    @post("/upload-dataset", status_code=201, summary="Upload a CSV / TSV / Parquet / JSONL / JSON dataset")
    async def upload_dataset(
        self,
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> UploadResponse:
        if not isinstance(data.file, UploadFile):
            raise ValidationFailed("Send the dataset as a multipart form field named 'file'", param="file")
        try:
            row = await datasets.upload(
                principal, data.file.filename, upload_chunks(data.file), description=data.description,
                purpose=data.purpose, project_id=data.project_id, task_id=data.task_id,
            )
        finally:
            await data.file.close()
        return UploadResponse(filename=row.filename, path=row.id, dataset=dataset_view(row), report=row.report)

    @get("/format-types", summary="Output format types, data strategies and split presets")
    async def format_types(self) -> FormatTypeList:
        return FormatTypeList(
            format_types=[FormatTypeView(id=kind.value, description=info.description, example=info.example)
                          for kind, info in FORMAT_TYPE_INFO.items()],
            data_strategies=[s.value for s in DataStrategy],
            split_presets=split_presets(),
        )

    @post("/format-dataset", status_code=200, summary="Format a dataset split into provider JSONL")
    async def format_dataset(
        self, data: JSONBody[FormatRequest], principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> FormatResponse:
        output = await datasets.format(principal, data)
        return FormatResponse(output_path=output.id, output=output_view(output))

    @get("/download-dataset", summary="Stream a dataset split as JSONL (formatted on demand)")
    async def download_dataset(
        self,
        dataset_path: FromQuery[str],
        principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
        split_name: FromQuery[str] = "train",
        split_preset: FromQuery[str | None] = None,
        format_type: FromQuery[str] = "openai_chat_jsonl",
        data_strategy: FromQuery[str] = "final_only",
        system_message: FromQuery[str] = "You are a helpful assistant.",
        thinking_instructions: FromQuery[str | None] = None,
        seed: FromQuery[int] = 42,
    ) -> File:
        request = FormatRequest(
            dataset_path=dataset_path, split_name=split_name, split_preset=split_preset, format_type=format_type,
            data_strategy=data_strategy, system_message=system_message,
            thinking_instructions=thinking_instructions, seed=seed,
        )
        output = await datasets.format(principal, request)
        dataset = await datasets.get(principal, dataset_path)
        _, path = await datasets.output(principal, output.id)
        return File(path=path, filename=download_name(dataset.filename, split_name, output.format_type),
                    media_type="application/jsonl", content_disposition_type="attachment")

    @get("/outputs/{output_id:str}", summary="Stream a formatted JSONL made earlier")
    async def download_output(
        self, output_id: FromPath[str], principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> File:
        output, path = await datasets.output(principal, output_id)
        return File(path=path, filename=f"{output.dataset_id}-{output.split_name}-{output.format_type}.jsonl",
                    media_type="application/jsonl", content_disposition_type="attachment")

    @get("/datasets", summary="Your datasets, newest first")
    async def list_datasets(
        self, principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService]
    ) -> DatasetList:
        return DatasetList(datasets=[dataset_view(row) for row in await datasets.list_datasets(principal)])

    @get("/datasets/{dataset_id:str}", summary="One dataset with its validation report")
    async def get_dataset(
        self, dataset_id: FromPath[str], principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> DatasetDetail:
        row = await datasets.get(principal, dataset_id)
        return DatasetDetail(dataset=dataset_view(row), report=row.report)

    @delete("/datasets/{dataset_id:str}", status_code=200, summary="Delete a dataset and its formatted files")
    async def delete_dataset(
        self, dataset_id: FromPath[str], principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> dict[str, Any]:
        await datasets.delete(principal, dataset_id)
        return {"id": dataset_id, "deleted": True}
