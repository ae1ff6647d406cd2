"""Retrieval routes under /api/retrieval: folders of document collections, search and grounded answers.

Creates answer 200 (the seed client counts only 200 as success). Errors are problem details:
415 for a file type we cannot index, 422 for an unreadable file or a refused URL, 413 for a
file or page over the size limit, 400 when a URL cannot be fetched, 404 for another tenant's
folder.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from finetune_service.api.streaming import STREAMED, EventStream
from finetune_service.auth import Principal
from finetune_service.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from finetune_service.schemas.retrieval import (
    AnswerRequest,
    Deleted,
    DocumentView,
    FolderFiles,
    SimilarRequest,
    SimilarResponse,
    UploadResult,
    UrlUpload,
    WebPagesRequest,
)
from finetune_service.services.completions import decode_body
from finetune_service.services.retrieval import RetrievalService, hit_view

READ_CHUNK = 1 << 20


def _form_text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValidationFailed(f"'{name}' must be a plain form field, not a file.", param=name)


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = bytearray()
    while piece := await upload.read(READ_CHUNK):
        data.extend(piece)
        if len(data) > limit:
            raise PayloadTooLarge(f"{upload.filename} is larger than the {limit}-byte limit for indexed files.",
                                  param="file")
    return bytes(data)


class RetrievalController(Controller):
    path = "/api/retrieval"
    tags = ["retrieval"]

    @post("/files", status_code=200, summary="Add a file (multipart 'file') or a URL (JSON {url}) to a folder",
          description="Multipart: `file` plus optional `folder_id`, `collection_name`, `embedding_model`. JSON: "
                      "`{url, folder_id?, collection_name?, embedding_model?}`. Without `folder_id` a new folder "
                      "is created. Indexing continues in the background: `document.status` (and "
                      "GET /folders/{folder_id}/documents/{document_id}) says when it is ready; `file.tokens` and "
                      "`file.documentId` are null until then.")
    async def add_file(self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
                       retrieval: NamedDependency[RetrievalService]) -> UploadResult:
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > retrieval.max_file_bytes + (1 << 20):
                raise PayloadTooLarge(f"The upload is {declared} bytes; files up to {retrieval.max_file_bytes} "
                                      "bytes can be indexed.", param="file")
            form = await request.form()
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ValidationFailed("Send the document as a multipart form field named 'file'.", param="file")
            try:
                data = await _read_limited(upload, retrieval.max_file_bytes)
            finally:
                await upload.close()
            return await retrieval.add_file(
                principal, upload.filename, data, upload.content_type,
                folder_id=_form_text(form.get("folder_id"), "folder_id"),
                collection_name=_form_text(form.get("collection_name"), "collection_name"),
                embedding_model=_form_text(form.get("embedding_model"), "embedding_model"),
            )
        if content_type.startswith("application/json") or not content_type:
            body = decode_body(await request.body(), UrlUpload)
            return await retrieval.add_url(principal, body.url, folder_id=body.folder_id,
                                           collection_name=body.collection_name,
                                           embedding_model=body.embedding_model)
        raise UnsupportedMediaType("Send multipart/form-data with a 'file' field, or application/json with a 'url'.")

    @post("/web-pages", status_code=200, summary="Crawl a web page (and same-host links) into a folder",
          description="`deep_level` 1: the page only; 2: also the same-host pages it links to; 3: also their "
                      "links. `max_links` caps the pages fetched besides the first (default 10, at most 100).")
    async def add_web_pages(self, data: JSONBody[WebPagesRequest], principal: NamedDependency[Principal],
                            retrieval: NamedDependency[RetrievalService]) -> UploadResult:
        return await retrieval.add_web_pages(
            principal, data.url, deep_level=data.deep_level, max_links=data.max_links, folder_id=data.folder_id,
            collection_name=data.collection_name, embedding_model=data.embedding_model,
        )

    @post("/similar-sentences", status_code=200, summary="Hybrid (full-text + vector) search of a folder")
    async def similar(self, data: JSONBody[SimilarRequest], principal: NamedDependency[Principal],
                      retrieval: NamedDependency[RetrievalService]) -> SimilarResponse:
        folder_id = data.api_folder_id or data.folder_id
        if not folder_id:
            raise ValidationFailed("'api_folder_id' is required.", param="api_folder_id")
        hits = await retrieval.search(principal, folder_id, data.query, top=data.top,
                                      collection_name=data.collection_name, threshold=data.similarity_threshold)
        return SimilarResponse(sentences=[hit_view(h) for h in hits])

    @get("/folders/{folder_id:str}/files", summary="Every chunk of a folder (or of one collection)")
    async def folder_files(self, folder_id: FromPath[str], principal: NamedDependency[Principal],
                           retrieval: NamedDependency[RetrievalService],
                           collection_name: FromQuery[str | None] = None, limit: FromQuery[int] = 1000,
                           offset: FromQuery[int] = 0) -> FolderFiles:
        if not 1 <= limit <= 10000 or offset < 0:
            raise ValidationFailed("'limit' must be 1..10000 and 'offset' at least 0.", param="limit")
        return await retrieval.folder_files(principal, folder_id, collection_name, limit=limit, offset=offset)

    @get("/folders/{folder_id:str}/documents/{document_id:str}", summary="A document's indexing status")
    async def document(self, folder_id: FromPath[str], document_id: FromPath[str],
                       principal: NamedDependency[Principal],
                       retrieval: NamedDependency[RetrievalService]) -> DocumentView:
        return await retrieval.document(principal, folder_id, document_id)

    @delete("/folders/{folder_id:str}/collections/{collection_name:str}", status_code=200,
            summary="Delete a collection and all its documents")
    async def delete_collection(self, folder_id: FromPath[str], collection_name: FromPath[str],
                                principal: NamedDependency[Principal],
                                retrieval: NamedDependency[RetrievalService]) -> Deleted:
        count = await retrieval.delete_collection(principal, folder_id, collection_name)
        return Deleted(message=f"Collection {collection_name!r} deleted ({count} chunks).", deleted=count)

    @delete("/folders/{folder_id:str}/collections/{collection_name:str}/elements/{element_id:str}",
            status_code=200, summary="Delete one chunk (element) of a collection")
    async def delete_element(self, folder_id: FromPath[str], collection_name: FromPath[str],
                             element_id: FromPath[str], principal: NamedDependency[Principal],
                             retrieval: NamedDependency[RetrievalService]) -> Deleted:
        await retrieval.delete_element(principal, folder_id, collection_name, element_id)
        return Deleted(message=f"Element {element_id!r} deleted.", deleted=1)

    @post("/answer", status_code=200, opt=STREAMED, summary="Answer from a folder's documents with any chat model",
          description="Retrieves up to `top` passages scoring at least `similarity_threshold`, then asks `model` "
                      "(any model /v1 accepts). `only_with_context: true` answers that nothing relevant was found, "
                      "without calling the model, when no passage qualifies. The answer is an OpenAI chat "
                      "completion plus `sources`; `stream: true` sends SSE chunks, then "
                      "`{\"object\": \"retrieval.sources\", \"sources\": [...]}`, then `data: [DONE]`.")
    async def answer(self, data: JSONBody[AnswerRequest], principal: NamedDependency[Principal],
                     retrieval: NamedDependency[RetrievalService]) -> Response[Any]:
        if data.stream:
            events, closer = await retrieval.answer_stream(principal, data)
            return EventStream(events, closer)
        return Response(await retrieval.answer(principal, data))
