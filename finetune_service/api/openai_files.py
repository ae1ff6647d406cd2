"""OpenAI-compatible /v1/files, backed by the datasets service."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from litestar.response import File

from finetune_service.api.datasets import upload_chunks
from finetune_service.auth import Principal
from finetune_service.errors import ValidationFailed
from finetune_service.schemas.openai_v1 import FileDeleted, FileList, FileObject
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.openai_facade import file_object

PURPOSES = ("fine-tune", "evals", "user_data", "batch", "assistants", "vision")


class FileUpload(msgspec.Struct):
    file: UploadFile | None = None
    purpose: str | None = None


class OpenAIFilesController(Controller):
    path = "/v1/files"
    tags = ["openai-compatible"]

    @post("", status_code=200, summary="Upload a file (OpenAI-compatible); it becomes a dataset")
    async def create_file(
        self, data: Annotated[FileUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
        principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService],
    ) -> FileObject:
        if not isinstance(data.file, UploadFile):
            raise ValidationFailed("Send the file as a multipart field named 'file'", param="file")
        if data.purpose not in PURPOSES:
            raise ValidationFailed(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
        try:
            row = await datasets.upload(principal, data.file.filename, upload_chunks(data.file), purpose=data.purpose)
        finally:
            await data.file.close()
        return file_object(row)

    @get("", summary="List files (OpenAI-compatible)")
    async def list_files(
        self, principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService],
        purpose: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=10000)] = 10000,
        order: FromQuery[Literal["asc", "desc"]] = "desc", after: FromQuery[str | None] = None,
    ) -> FileList:
        rows = await datasets.list_datasets(principal)
        if order == "asc":
            rows.reverse()
        if purpose:
            rows = [r for r in rows if (r.purpose or "fine-tune") == purpose]
        if after:
            ids = [r.id for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        page = rows[:limit]
        return FileList(data=[file_object(r) for r in page], has_more=len(rows) > limit,
                        first_id=page[0].id if page else None, last_id=page[-1].id if page else None)

    @get("/{file_id:str}", summary="Retrieve a file (OpenAI-compatible)")
    async def retrieve_file(
        self, file_id: FromPath[str], principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService]
    ) -> FileObject:
        return file_object(await datasets.get(principal, file_id))

    @delete("/{file_id:str}", status_code=200, summary="Delete a file (OpenAI-compatible)")
    async def delete_file(
        self, file_id: FromPath[str], principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService]
    ) -> FileDeleted:
        await datasets.delete(principal, file_id)
        return FileDeleted(id=file_id)

    @get("/{file_id:str}/content", summary="The file's bytes (OpenAI-compatible)")
    async def file_content(
        self, file_id: FromPath[str], principal: NamedDependency[Principal], datasets: NamedDependency[DatasetsService]
    ) -> File:
        row = await datasets.get(principal, file_id)
        return File(path=datasets.original(row), filename=row.filename, media_type="application/octet-stream")
