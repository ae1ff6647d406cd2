"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/models`, `/v1/embeddings`; and the
saved responses (`save_response: true`) under `/api/finetune/saved-responses`.

Errors on `/v1` answer in OpenAI's shape (see `api/problems.py`), so the openai SDK raises its
usual exception classes. Bodies are decoded here with messages that name the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from finetune_service.api.streaming import STREAMED, EventStream
from finetune_service.auth import Principal
from finetune_service.errors import NotFound
from finetune_service.schemas.completions import (
    ChatCompletionRequest,
    EmbeddingsRequest,
    ModelList,
    ModelObject,
    SavedResponseList,
)
from finetune_service.services.completions import CompletionsService, decode_body, saved_response_view


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai-compatible"]

    @post("/chat/completions", status_code=200, opt=STREAMED,
          summary="Chat completion (OpenAI-compatible; stream=true for SSE)",
          description="Body: OpenAI's chat completion request (model, messages, max_tokens, temperature, top_p, "
                      "stop, n, stream, stream_options, user, tools, ...) plus `save_response` (default false). "
                      "`model`: `provider/model` (together/, fireworks/, openai/, sandbox/), one of your fine-tuned "
                      "models, or an alias; see GET /v1/models.")
    async def chat_completions(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        completions: NamedDependency[CompletionsService],
    ) -> Response[Any]:
        body = decode_body(await request.body(), ChatCompletionRequest)
        if body.stream:
            stream = await completions.open_stream(principal, body)
            return EventStream(stream.events(), stream.aclose)
        return Response(await completions.complete(principal, body), media_type=MediaType.JSON)

    @post("/embeddings", status_code=200, summary="Embeddings (OpenAI-compatible)")
    async def embeddings(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        completions: NamedDependency[CompletionsService],
    ) -> Response[Any]:
        body = decode_body(await request.body(), EmbeddingsRequest)
        return Response(await completions.embeddings(principal, body), media_type=MediaType.JSON)

    @get("/models", summary="Models you can call: provider base models, your fine-tuned models, aliases")
    async def models(
        self, principal: NamedDependency[Principal], completions: NamedDependency[CompletionsService]
    ) -> ModelList:
        return ModelList(data=await completions.list_models(principal))

    @get("/models/{model_id:path}", summary="One model")
    async def model(
        self, model_id: FromPath[str], principal: NamedDependency[Principal],
        completions: NamedDependency[CompletionsService],
    ) -> ModelObject:
        wanted = model_id.lstrip("/")
        for item in await completions.list_models(principal):
            if item.id == wanted:
                return item
        raise NotFound(f"The model '{wanted}' does not exist or you do not have access to it", param="model")


class SavedResponsesController(Controller):
    path = "/api/finetune/saved-responses"
    tags = ["completions"]

    @get("", summary="Conversations kept with save_response=true, newest first (cursor pagination)")
    async def list_saved(
        self, principal: NamedDependency[Principal], completions: NamedDependency[CompletionsService],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50, after: FromQuery[str | None] = None,
        model: FromQuery[str | None] = None,
    ) -> SavedResponseList:
        rows, has_more = await completions.saved_responses(principal, limit=limit, after=after, model=model)
        return SavedResponseList(saved_responses=[saved_response_view(r) for r in rows], has_more=has_more,
                                 next_cursor=rows[-1].id if has_more and rows else None)
