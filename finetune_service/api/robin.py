"""The RobinApi client's routes under /api/api-response-service/ (shared/specs/ROBIN.md).

A thin translation onto the native services: completions, retrieval, datasets, jobs,
evaluations and media. Every success is HTTP 200 (the client counts nothing else as success);
errors are problem details whose `detail` says what to fix, which the client shows as
"Error code: N - {...}".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from finetune_service.api.datasets import upload_chunks
from finetune_service.api.problems import EXCEPTION_HANDLERS
from finetune_service.api.streaming import STREAMED, EventStream
from finetune_service.auth import Principal
from finetune_service.errors import UnsupportedMediaType, ValidationFailed
from finetune_service.schemas.retrieval import FolderFiles, SimilarResponse
from finetune_service.schemas.robin import (
    AddWebUrlBody,
    DeleteCollectionBody,
    DeleteElementBody,
    FileTestBody,
    FileTestResult,
    FineTuningItem,
    FineTuningPage,
    FineTuningStarted,
    FineTuningTestBody,
    FolderAnswer,
    FolderFilesBody,
    FoldersBody,
    GetResponseBody,
    MediaRecord,
    Message,
    PageLink,
    PageLinks,
    PageMeta,
    SimilarSentencesBody,
    StartFineTuningBody,
    TextToImageBody,
    UploadedFile,
)
from finetune_service.services.completions import CompletionsService, decode_body
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.media import MediaService
from finetune_service.services.retrieval import RetrievalService, hit_view
from finetune_service.services.robin import (
    RobinService,
    answer_request,
    chat_request,
    completion_answer,
    folder_answer,
    media_record,
    robin_events,
)

# The client shows the body only for these statuses (and 5xx); anything else becomes "Unknown error".
_CLIENT_STATUSES = frozenset({400, 401, 403, 404, 409, 422, 429})


def _readable(handler: Callable[[Request[Any, Any, Any], Any], Response[Any]]
              ) -> Callable[[Request[Any, Any, Any], Any], Response[Any]]:
    """Answer 413 / 415 / 405 ... as 422 (problem `status` too, `http_status` keeps the real one)."""

    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        response = handler(request, exc)
        status = response.status_code or 500
        if status < 500 and status not in _CLIENT_STATUSES:
            if isinstance(response.content, dict):
                response.content = {**response.content, "status": 422, "http_status": status}
            response.status_code = 422
        return response

    return handle


def _base(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValidationFailed(f"'{name}' must be a plain form field, not a file.", param=name)


async def _upload(request: Request[Any, Any, Any]) -> tuple[UploadFile, Any]:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType("Send multipart/form-data with the file in a field named 'file'.", param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationFailed("Send the file as a multipart form field named 'file'.", param="file")
    return upload, form


class RobinController(Controller):
    path = "/api/api-response-service"
    tags = ["robin-api"]
    exception_handlers = {kind: _readable(handler) for kind, handler in EXCEPTION_HANDLERS.items()}

    # -- completions -------------------------------------------------------------------------
    @post("/get-response", status_code=200, opt=STREAMED,
          summary="RobinApi: chat completion, optionally grounded in a folder",
          description="`{model, conversation, max_new_tokens, stream, temperature, save_response, tools?}`; with "
                      "`folder_id` (and `top`, `similarity_threshold`, `only_with_context`) the answer is grounded "
                      "in that folder's documents. `stream: true` sends `event: update` events, a final event "
                      "with `details`, then `event: update\\ndata: DONE`.")
    async def get_response(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        completions: NamedDependency[CompletionsService], retrieval: NamedDependency[RetrievalService],
    ) -> Response[Any]:
        body = decode_body(await request.body(), GetResponseBody)
        if body.folder_id:
            grounded = answer_request(body)
            if grounded.stream:
                events, closer = await retrieval.answer_stream(principal, grounded)
                return EventStream(robin_events(events, body.model), closer)
            return Response(completion_answer(await retrieval.answer(principal, grounded)), media_type=MediaType.JSON)
        chat = chat_request(body)
        if chat.stream:
            stream = await completions.open_stream(principal, chat)
            return EventStream(robin_events(stream.events(), body.model), stream.aclose)
        return Response(completion_answer(await completions.complete(principal, chat)), media_type=MediaType.JSON)

    @post("/text-to-image", status_code=200, summary="RobinApi: draw an image; answers its URL (a JSON string)",
          description="The URL is a signed link that works without the API key for an hour. The model is the "
                      "`ROBIN_IMAGE` alias (FINETUNE_MODEL_ALIASES), else the Sandbox's image model.")
    async def text_to_image(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        media: NamedDependency[MediaService],
    ) -> Response[bytes]:
        body = decode_body(await request.body(), TextToImageBody)
        url = await media.image_url_for(principal, body.prompt, _base(request))
        return Response(msgspec.json.encode(url), media_type=MediaType.JSON)  # a JSON string, as the client expects

    # -- folders -----------------------------------------------------------------------------
    @post("/upload-file", status_code=200, summary="RobinApi: upload a file to add to a folder next")
    async def upload_file(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService],
    ) -> UploadedFile:
        upload, _ = await _upload(request)
        try:
            data = b"".join([chunk async for chunk in upload_chunks(upload)])
        finally:
            await upload.close()
        return await robin.stash(principal, upload.filename, data)

    @post("/folders", status_code=200, summary="RobinApi: index a file (fileId) or URL (fileUrl) into a folder",
          description="No `apiFolderId`: a new folder. No `collectionName`: the default collection. Indexing "
                      "continues in the background; `file.tokens` and `file.documentId` are null until it is done.")
    async def folders(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService], retrieval: NamedDependency[RetrievalService],
    ) -> FolderAnswer:
        body = decode_body(await request.body(), FoldersBody)
        if bool(body.file_url) == bool(body.file_id):
            raise ValidationFailed("Send either 'fileUrl' or 'fileId' (from upload-file).", param="fileId")
        if body.file_id:
            name, data = await robin.stashed(principal, body.file_id)
            result = await retrieval.add_file(principal, name, data, folder_id=body.api_folder_id,
                                              collection_name=body.collection_name)
        else:
            assert body.file_url is not None
            result = await retrieval.add_url(principal, body.file_url, folder_id=body.api_folder_id,
                                             collection_name=body.collection_name)
        return folder_answer(result, _base(request))

    @post("/folders/add-web-url", status_code=200, summary="RobinApi: crawl a web page into a folder")
    async def add_web_url(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        retrieval: NamedDependency[RetrievalService],
    ) -> FolderAnswer:
        body = decode_body(await request.body(), AddWebUrlBody)
        result = await retrieval.add_web_pages(principal, body.web_url, deep_level=body.deep_level,
                                               max_links=body.max_links, folder_id=body.api_folder_id,
                                               collection_name=body.collection_name)
        return folder_answer(result, _base(request))

    @post("/folders/get-similar-sentences", status_code=200, summary="RobinApi: search a folder")
    async def similar_sentences(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        retrieval: NamedDependency[RetrievalService],
    ) -> SimilarResponse:
        body = decode_body(await request.body(), SimilarSentencesBody)
        hits = await retrieval.search(principal, body.api_folder_id, body.query, top=body.top,
                                      collection_name=body.collection_name, threshold=body.similarity_threshold)
        return SimilarResponse(sentences=[hit_view(h) for h in hits])

    @post("/folders/get-folder-files", status_code=200, summary="RobinApi: every indexed passage of a folder")
    async def folder_files(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        retrieval: NamedDependency[RetrievalService],
    ) -> FolderFiles:
        body = decode_body(await request.body(), FolderFilesBody)
        return await retrieval.folder_files(principal, body.api_folder_id, body.collection_name)

    @post("/folders/delete-collection", status_code=200, summary="RobinApi: delete a collection of a folder")
    async def delete_collection(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        retrieval: NamedDependency[RetrievalService],
    ) -> Message:
        body = decode_body(await request.body(), DeleteCollectionBody)
        count = await retrieval.delete_collection(principal, body.folder_id, body.collection_name)
        return Message(message=f"Collection {body.collection_name!r} deleted ({count} passages).", deleted=count)

    @post("/folders/delete-by-element-id", status_code=200, summary="RobinApi: delete one passage of a collection")
    async def delete_element(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        retrieval: NamedDependency[RetrievalService],
    ) -> Message:
        body = decode_body(await request.body(), DeleteElementBody)
        await retrieval.delete_element(principal, body.folder_id, body.collection_name, body.element_id)
        return Message(message=f"Element {body.element_id!r} deleted.", deleted=1)

    # -- fine-tuning -------------------------------------------------------------------------
    @post("/fine-tuning/upload-data-set", status_code=200, summary="RobinApi: upload a training or test data set")
    async def upload_data_set(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        datasets: NamedDependency[DatasetsService],
    ) -> MediaRecord:
        upload, form = await _upload(request)
        purpose = _text(form.get("purpose"), "purpose")
        if purpose not in (None, "train", "test"):
            raise ValidationFailed(f"'purpose' must be 'train' or 'test', got {purpose!r}.", param="purpose")
        try:
            row = await datasets.upload(principal, upload.filename, upload_chunks(upload),
                                        description=_text(form.get("description"), "description"), purpose=purpose)
        finally:
            await upload.close()
        return media_record(row, _base(request), source=_text(form.get("source"), "source"),
                            sample=_text(form.get("data"), "data"))

    @post("/fine-tuning", status_code=200, summary="RobinApi: start a fine-tune",
          description="`task`: language-modeling or classification-text (text-to-images needs a provider that "
                      "tunes image models: 422). `paramsInput.input_template` renders each row's user turn; "
                      "`paramsOutput` is the answer (label) column. Trainer `params` map onto the provider's "
                      "parameters where it has them; the rest are listed as not applied.")
    async def start_fine_tuning(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService],
    ) -> FineTuningStarted:
        job = await robin.start(principal, decode_body(await request.body(), StartFineTuningBody))
        return FineTuningStarted(FineTuningid=job.id, status=job.status)

    @get(["/fine-tuning", "/fine-tuning/"], summary="RobinApi: your fine-tunes, a Laravel-style page")
    async def list_fine_tunings(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService], page: FromQuery[int] = 1, limit: FromQuery[int] = 10,
    ) -> FineTuningPage:
        base = _base(request)
        items, total = await robin.page(principal, page, limit, base)
        path = f"{base}/api/api-response-service/fine-tuning"
        last = max(1, math.ceil(total / limit))

        def url(number: int) -> str:
            return f"{path}?page={number}&limit={limit}"

        first_row = (page - 1) * limit + 1
        links = [PageLink(url=url(page - 1) if page > 1 else None, label="&laquo; Previous", active=False)]
        links += [PageLink(url=url(n), label=str(n), active=n == page) for n in range(1, last + 1)]
        links.append(PageLink(url=url(page + 1) if page < last else None, label="Next &raquo;", active=False))
        return FineTuningPage(
            data=items,
            links=PageLinks(first=url(1), last=url(last), prev=url(page - 1) if page > 1 else None,
                            next=url(page + 1) if page < last else None),
            meta=PageMeta(current_page=page, from_=first_row if items else None, last_page=last, links=links,
                          path=path, per_page=limit, to=first_row + len(items) - 1 if items else 0, total=total),
        )

    @get("/fine-tuning/{fine_tuning_id:str}", summary="RobinApi: one fine-tune with progress and test runs")
    async def fine_tuning(
        self, request: Request[Principal, Any, Any], fine_tuning_id: FromPath[str],
        principal: NamedDependency[Principal], robin: NamedDependency[RobinService],
    ) -> FineTuningItem:
        return await robin.item(principal, fine_tuning_id, _base(request))

    @post("/fine-tuning/test", status_code=200, summary="RobinApi: ask the fine-tuned model (input template filled)")
    async def test_fine_tuning(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService],
    ) -> Response[Any]:
        body = decode_body(await request.body(), FineTuningTestBody)
        answer = await robin.test(principal, body.fine_tuning_id, body.params_input, body.max_tokens,
                                  body.temperature)
        return Response(completion_answer(answer), media_type=MediaType.JSON)

    @post("/fine-tuning/fie-test", status_code=200, summary="RobinApi: evaluate the fine-tuned model on a data set",
          description="`linkDataSet`: a data set id from upload-data-set (or its url), shaped like the training "
                      "set. Waits for the run (up to two minutes) and answers its metrics and rows; the run is "
                      "listed in the fine-tune's `testings`.")
    async def file_test(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        robin: NamedDependency[RobinService],
    ) -> FileTestResult:
        body = decode_body(await request.body(), FileTestBody)
        return await robin.file_test(principal, body.fine_tuning_id, body.link_data_set)
