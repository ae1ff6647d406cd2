"""Chat completions, embeddings and the model list over every provider (the `/v1` surface).

Routing a `model` name, in order:

1. an alias from `settings.model_aliases` (`ROBIN_4` -> `sandbox/sandbox-chat-large`) is replaced
   by its target, then routed like any other name;
2. `<prefix>/<model>` whose model is a provider's known base model goes straight to that
   provider (no database read);
3. a fine-tuned model of one of the tenant's jobs goes to that job's provider;
4. any other `<prefix>/<model>` (prefix = `ProviderName.prefix`) goes to that provider with the
   prefix stripped, unless the name is another tenant's fine-tuned model (404, as if unknown).

Steps 3 and 4 share one database query; resolved routes are cached per (tenant, model) for
`route_cache_seconds` (5 s), so a hot model costs no query at all.

Streaming (`ChatStream`): the upstream stream is opened before our response starts, so its
errors get a real HTTP status. A pump task reads the upstream into a small queue; the SSE relay
sends `: keep-alive` comments while the queue stays empty, and closes the upstream (cancels the
pump, `aclose()`s the iterator) however the response ends, including a client disconnect. A
failure after the response started is sent as `data: {"error": {...}}` and ends the stream.
The last chunk carries `usage` (when `stream_options.include_usage`) and `details`:
`time_to_first_token_ms` (request received -> first content delta), `total_time_ms` (request
received -> end of the upstream stream), `tokens_per_second` (completion tokens / time from the
first to the last token; total time when everything came at once) and `completion_tokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import struct
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import anyio
import msgspec
from sqlalchemy import select
from sqlmodel import col

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import Job, SavedResponse
from finetune_service.errors import BadRequest, Conflict, DomainError, NotFound, ProviderError, kind_of
from finetune_service.providers.base import FineTuneProvider, JobStatus, ProviderName
from finetune_service.schemas.completions import (
    ChatCompletionRequest,
    EmbeddingsRequest,
    ModelObject,
    SavedResponseView,
)
from finetune_service.services.catalog import Catalog

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TOKENS_LIMIT = 32768
MAX_EMBEDDING_INPUTS = 2048
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
# Request fields that are ours to handle, never forwarded as parameters.
_NOT_FORWARDED = frozenset({"model", "save_response", "stream", "stream_options"})


# ---------------------------------------------------------------------------------- bodies

_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")
_encoder = msgspec.json.Encoder()


def decode_body(raw: bytes, kind: type[T]) -> T:
    """Decode a JSON body into `kind`, with OpenAI-style messages that name the parameter."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        raise _body_error(str(error)) from None
    except msgspec.DecodeError:
        raise BadRequest("The request body must be a JSON object (Content-Type: application/json).") from None


def _body_error(message: str) -> BadRequest:
    text, path = message, ""
    at = _AT_PATH.search(message)
    if at:
        path, text = at["path"], message[: at.start()]
    named = _FIELD.search(text)
    if named and text.startswith(("Object missing required field", "Object contains unknown field")):
        param = f"{path}.{named['name']}" if path else named["name"]
        if text.startswith("Object missing"):
            return BadRequest(f"Missing required parameter: '{param}'.", param=param)
        return BadRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if path:
        return BadRequest(f"Invalid type for '{path}': {text[:1].lower()}{text[1:]}.", param=path)
    return BadRequest(f"Invalid request body: {text[:1].lower()}{text[1:]}.")


def _in_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low:g} and {high:g}, got {value:g}.", param=name)


def validate_chat(request: ChatCompletionRequest) -> None:
    """What OpenAI checks before it calls a model, with a message and `param` per failure."""
    if not request.model.strip():
        raise BadRequest("'model' must name a model; see GET /v1/models.", param="model")
    if not request.messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    for index, message in enumerate(request.messages):
        where = f"messages[{index}]"
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}.", param=f"{where}.role")
        content = message.get("content")
        if role == "assistant":
            if content is None and not (message.get("tool_calls") or message.get("function_call")):
                raise BadRequest(f"'{where}.content' is required for an assistant message without tool_calls.",
                                 param=f"{where}.content")
        elif not isinstance(content, str | list):
            raise BadRequest(f"'{where}.content' is required for a {role} message: a string or a list of parts.",
                             param=f"{where}.content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(f"'{where}.content' must be a string or a list of parts.", param=f"{where}.content")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise BadRequest(f"'{where}.tool_call_id' is required for a tool message.", param=f"{where}.tool_call_id")
    _in_range("max_tokens", request.max_tokens, 1, MAX_TOKENS_LIMIT)
    _in_range("max_completion_tokens", request.max_completion_tokens, 1, MAX_TOKENS_LIMIT)
    _in_range("temperature", request.temperature, 0, 2)
    _in_range("top_p", request.top_p, 0, 1)
    _in_range("n", request.n, 1, 128)
    _in_range("presence_penalty", request.presence_penalty, -2, 2)
    _in_range("frequency_penalty", request.frequency_penalty, -2, 2)
    _in_range("top_logprobs", request.top_logprobs, 0, 20)
    if isinstance(request.stop, list) and len(request.stop) > 4:
        raise BadRequest(f"'stop' takes at most 4 sequences, got {len(request.stop)}.", param="stop")
    if request.stream_options is not None and not request.stream:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    for index, tool in enumerate(request.tools or []):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise BadRequest(f"'tools[{index}]' must look like {{\"type\": \"function\", \"function\": "
                             "{\"name\": ..., \"parameters\": {...}}}.", param=f"tools[{index}]")


def validate_embeddings(request: EmbeddingsRequest) -> None:
    if not request.model.strip():
        raise BadRequest("'model' must name a model; see GET /v1/models.", param="model")
    value = request.input
    if isinstance(value, str):
        if not value:
            raise BadRequest("'input' must not be empty.", param="input")
    elif isinstance(value, list) and value:
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise BadRequest(f"'input' takes at most {MAX_EMBEDDING_INPUTS} items, got {len(value)}.", param="input")
        strings = all(isinstance(v, str) and v for v in value)
        token_ids = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        token_lists = all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value)
        if not (strings or token_ids or token_lists):
            raise BadRequest("'input' must be a string, a list of non-empty strings, or token id arrays.",
                             param="input")
    else:
        raise BadRequest("'input' must be a non-empty string or list.", param="input")
    if request.encoding_format not in (None, "float", "base64"):
        raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {request.encoding_format!r}.",
                         param="encoding_format")
    if request.dimensions is not None and request.dimensions < 1:
        raise BadRequest("'dimensions' must be at least 1.", param="dimensions")


def upstream_body(request: ChatCompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(request).items() if k not in _NOT_FORWARDED}
    body["model"] = model
    if stream:
        # Always ask for usage upstream: tokens/s needs it; the client only sees it if it asked.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def request_parameters(request: ChatCompletionRequest) -> dict[str, Any]:
    """The generation parameters of a request (what a saved response records besides messages)."""
    return {k: v for k, v in msgspec.to_builtins(request).items() if k not in _NOT_FORWARDED and k != "messages"}


# ---------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    provider: FineTuneProvider
    model: str  # the name the client used; echoed back in responses
    upstream: str  # the name the provider is called with
    kind: str  # "base", "alias" or "fine_tuned"


@contextlib.contextmanager
def provider_errors(provider: FineTuneProvider) -> Iterator[None]:
    """Whatever a provider raises becomes a ProviderError with the status we answer."""
    try:
        yield
    except DomainError:
        raise
    except TimeoutError:
        raise ProviderError(f"{provider.display_name} did not answer in time", provider=provider.name.value,
                            status=504, retryable=True) from None
    except Exception as error:
        log.exception("unexpected error from %s", provider.name.value)
        raise ProviderError(f"{provider.display_name} failed unexpectedly ({type(error).__name__})",
                            provider=provider.name.value, status=502) from error


def error_body(error: BaseException) -> dict[str, Any]:
    """OpenAI's error object for an error that happens after a stream started."""
    if isinstance(error, DomainError):
        kind = kind_of(error)
        return {"message": error.detail, "type": kind.openai_type, "param": error.param,
                "code": kind.slug.replace("-", "_"), "status": kind.status}
    return {"message": "The service hit an unexpected error while streaming.", "type": "server_error",
            "param": None, "code": "internal_error", "status": 500}


@dataclass
class CompletionsService:
    database: Database
    catalog: Catalog
    aliases: dict[str, str]
    keepalive_seconds: float = 15.0
    # Resolved routes per (tenant, model) are reused this long: a deleted job's model stays callable
    # at most this long; unknown names are not cached (they raise).
    route_cache_seconds: float = 5.0
    _static: dict[ProviderName, frozenset[str]] = field(default_factory=dict)
    _routes: dict[tuple[str, str], tuple[float, Route]] = field(default_factory=dict)

    # -- routing -------------------------------------------------------------------------
    @staticmethod
    def _unknown(model: str, reason: str | None = None) -> NotFound:
        text = f"The model '{model}' does not exist or you do not have access to it"
        return NotFound(f"{text}: {reason}." if reason else f"{text}; see GET /v1/models for the models you can use.",
                        param="model")

    def _split_prefix(self, target: str) -> tuple[FineTuneProvider, str] | None:
        prefix, sep, rest = target.partition("/")
        if not sep:
            return None
        lowered = prefix.lower()
        for name, provider in self.catalog.providers.items():
            if name.prefix == lowered:
                return provider, rest
        return None

    def _static_ids(self, provider: FineTuneProvider) -> frozenset[str]:
        ids = self._static.get(provider.name)
        if ids is None:
            ids = self._static[provider.name] = frozenset(m.id for m in provider.static_models())
        return ids

    async def _fine_tunes_named(self, names: set[str]) -> list[Job]:
        """Jobs (of any tenant) whose fine-tuned model has one of these names: one query."""
        async with self.database.session() as session:
            rows = await session.execute(select(Job).where(col(Job.fine_tuned_model).in_(names)))
            return list(rows.scalars())

    async def resolve(self, principal: Principal, model: str) -> Route:
        key = (principal.tenant_id, model)
        cached = self._routes.get(key)
        if cached is not None and cached[0] > time.monotonic():
            route = cached[1]
            # The decision is cached; the provider object is always the current one.
            return dataclasses.replace(route, provider=self.catalog.providers[route.provider.name])
        route = await self._resolve(principal, model)
        if self.route_cache_seconds > 0:
            if len(self._routes) >= 4096:
                self._routes.clear()
            self._routes[key] = (time.monotonic() + self.route_cache_seconds, route)
        return route

    async def _resolve(self, principal: Principal, model: str) -> Route:
        target = self.aliases.get(model, model)
        kind = "alias" if model in self.aliases else "base"
        split = self._split_prefix(target)
        if split is not None:
            provider, rest = split
            if rest and provider.configured and rest in self._static_ids(provider):
                return Route(provider, model, rest, kind)
        names = {target} | ({split[1]} if split is not None and split[1] else set())
        jobs = await self._fine_tunes_named(names)
        own = next((j for j in jobs if j.tenant_id == principal.tenant_id and j.fine_tuned_model == target), None)
        if own is not None:
            return Route(self.catalog.provider(own.provider), model, target, "fine_tuned")
        if split is None or not split[1]:
            raise self._unknown(model)
        provider, rest = split
        if not provider.configured:
            raise self._unknown(model, f"{provider.display_name} is not configured on this service")
        owners = [j for j in jobs if j.fine_tuned_model == rest]
        if owners:
            if not any(j.tenant_id == principal.tenant_id for j in owners):
                raise self._unknown(model)
            return Route(provider, model, rest, "fine_tuned")
        if provider.name is ProviderName.SANDBOX:
            # The Sandbox's models are its static ones and the fine-tunes of recorded jobs.
            raise self._unknown(model)
        return Route(provider, model, rest, kind)

    def job_route(self, job: Job, *, base: bool = False) -> Route:
        provider = self.catalog.provider(job.provider)
        if base:
            return Route(provider, f"{provider.name.prefix}/{job.base_model}", job.base_model, "base")
        if not job.fine_tuned_model:
            raise Conflict(f"Job {job.id} has no fine-tuned model yet (status {job.status}); wait until it "
                           "has succeeded.", param="job_id")
        return Route(provider, job.fine_tuned_model, job.fine_tuned_model, "fine_tuned")

    # -- chat --------------------------------------------------------------------------------
    async def call(self, route: Route, body: dict[str, Any]) -> dict[str, Any]:
        with provider_errors(route.provider):
            result = await route.provider.chat_completion(body)
        result["model"] = route.model
        return result

    async def complete(self, principal: Principal, request: ChatCompletionRequest) -> dict[str, Any]:
        validate_chat(request)
        route = await self.resolve(principal, request.model)
        result = await self.call(route, upstream_body(request, route.upstream, stream=False))
        if request.save_response:
            await self.save(principal, route, request, list(result.get("choices") or []), result.get("usage"),
                            stream=False)
        return result

    async def open_stream(self, principal: Principal, request: ChatCompletionRequest) -> ChatStream:
        """Validate, route and open the upstream stream: every error raises here, before any byte is sent."""
        started = time.perf_counter()
        validate_chat(request)
        route = await self.resolve(principal, request.model)
        body = upstream_body(request, route.upstream, stream=True)
        prefetched: list[dict[str, Any]] = []
        with provider_errors(route.provider):
            opened: Any = route.provider.stream_chat_completion(body)
            if inspect.isawaitable(opened):
                upstream: AsyncIterator[dict[str, Any]] = await opened
            else:
                # A plain async generator opens upstream on its first step: take it now.
                upstream = opened
                try:
                    prefetched.append(await anext(upstream))
                except StopAsyncIteration:
                    pass
                except BaseException:
                    await _close_quietly(upstream)
                    raise
        return ChatStream(self, principal, route, request, upstream, prefetched, started)

    # -- saved responses -------------------------------------------------------------------
    async def save(
        self, principal: Principal, route: Route, request: ChatCompletionRequest, choices: list[dict[str, Any]],
        usage: dict[str, Any] | None, *, stream: bool,
    ) -> SavedResponse:
        row = SavedResponse(
            tenant_id=principal.tenant_id, model=route.model, provider=route.provider.name.value,
            upstream_model=route.upstream, messages=list(request.messages),
            choices=[{k: v for k, v in c.items() if k in ("index", "message", "finish_reason")} for c in choices],
            usage=dict(usage or {}), parameters=request_parameters(request), stream=stream,
        )
        async with self.database.session() as session:
            session.add(row)
        return row

    async def saved_responses(
        self, principal: Principal, *, limit: int = 50, after: str | None = None, model: str | None = None,
    ) -> tuple[list[SavedResponse], bool]:
        conditions: list[Any] = [col(SavedResponse.tenant_id) == principal.tenant_id]
        if model:
            conditions.append(col(SavedResponse.model) == model)
        async with self.database.session() as session:
            if after:
                anchor = await session.get(SavedResponse, after)
                if anchor is None or anchor.tenant_id != principal.tenant_id:
                    raise NotFound(f"Cursor {after!r} is not a saved response of yours", param="after")
                conditions.append(
                    (col(SavedResponse.created_at) < anchor.created_at)
                    | ((col(SavedResponse.created_at) == anchor.created_at) & (col(SavedResponse.id) < anchor.id))
                )
            query = (select(SavedResponse).where(*conditions)
                     .order_by(col(SavedResponse.created_at).desc(), col(SavedResponse.id).desc()).limit(limit + 1))
            rows = list((await session.execute(query)).scalars())
        return rows[:limit], len(rows) > limit

    # -- embeddings and models -----------------------------------------------------------------
    async def embeddings(self, principal: Principal, request: EmbeddingsRequest) -> dict[str, Any]:
        validate_embeddings(request)
        route = await self.resolve(principal, request.model)
        body: dict[str, Any] = {"model": route.upstream, "input": request.input, "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        with provider_errors(route.provider):
            result = await route.provider.embeddings(body)
        result["model"] = route.model
        if request.encoding_format == "base64":
            for item in result.get("data") or []:
                vector = item.get("embedding")
                if isinstance(vector, list):
                    item["embedding"] = b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return result

    async def list_models(self, principal: Principal) -> list[ModelObject]:
        models: list[ModelObject] = []
        for listing in await self.catalog.models():
            provider = listing.provider
            if not provider.configured:
                continue
            prefix = provider.name.prefix
            models.extend(ModelObject(id=f"{prefix}/{m.id}", owned_by=prefix, kind="base",
                                      provider=provider.name.value) for m in listing.models)
        async with self.database.session() as session:
            rows = await session.execute(select(Job).where(
                col(Job.tenant_id) == principal.tenant_id, col(Job.fine_tuned_model).is_not(None),
                col(Job.status) == JobStatus.SUCCEEDED.value,
            ).order_by(col(Job.created_at).desc()))
            jobs = list(rows.scalars())
        for job in jobs:
            assert job.fine_tuned_model is not None
            stamp: datetime = job.finished_at or job.created_at
            models.append(ModelObject(id=job.fine_tuned_model, owned_by=principal.tenant_id, kind="fine_tuned",
                                      provider=job.provider, created=int(stamp.timestamp()), job_id=job.id))
        for alias, target in sorted(self.aliases.items()):
            split = self._split_prefix(target)
            if split is not None and split[0].configured:
                models.append(ModelObject(id=alias, owned_by=split[0].name.prefix, kind="alias",
                                          provider=split[0].name.value, alias_of=target))
        return models


async def _close_quietly(iterator: Any) -> None:
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


_CHUNK, _END, _ERROR = 0, 1, 2


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(data) + b"\n\n"


class ChatStream:
    """Relays an opened upstream stream as SSE bytes; `aclose()` always closes the upstream.

    Whatever the upstream has already sent goes out as one write (one pass through the middleware
    and one socket send per batch instead of per chunk); nothing waits to fill a batch. `[DONE]`
    is always its own write, so wrappers can put their own events before it.
    """

    def __init__(
        self, service: CompletionsService, principal: Principal, route: Route, request: ChatCompletionRequest,
        upstream: AsyncIterator[dict[str, Any]], prefetched: list[dict[str, Any]], started: float,
    ) -> None:
        self._service = service
        self._principal = principal
        self._route = route
        self._request = request
        self._upstream = upstream
        self._prefetched = prefetched
        self._started = started
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=64)
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._include_usage = bool(request.stream_options and request.stream_options.include_usage)
        self._first_token: float | None = None
        self._usage: dict[str, Any] | None = None
        self._deltas = 0
        self._held: list[dict[str, Any]] = []
        self._last: dict[str, Any] = {}
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}

    async def _run_pump(self) -> None:
        try:
            for chunk in self._prefetched:
                await self._queue.put((_CHUNK, chunk))
            async for chunk in self._upstream:
                await self._queue.put((_CHUNK, chunk))
        except Exception as error:
            await self._queue.put((_ERROR, error))
        else:
            await self._queue.put((_END, None))

    async def _next(self) -> tuple[int, Any] | None:
        """The next upstream item, or None when the keep-alive interval passed without one."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(self._service.keepalive_seconds):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def events(self) -> AsyncIterator[bytes]:
        self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        try:
            while True:
                item = await self._next()
                if item is None:
                    yield KEEPALIVE
                    continue
                batch: list[bytes] = []
                while item is not None:
                    kind, payload = item
                    if kind == _ERROR:
                        if not isinstance(payload, DomainError):
                            log.error("upstream stream of %s failed", self._route.provider.name.value,
                                      exc_info=payload)
                        batch.append(_event({"error": error_body(payload)}))
                        yield b"".join(batch)
                        return
                    if kind == _END:
                        final = self._final(time.perf_counter())
                        batch.extend(_event(chunk) for chunk in self._held)
                        if self._request.save_response:
                            # Saved before the last event, so a client that saw it finds the row.
                            yield b"".join(batch)
                            batch = []
                            await self._save()
                        batch.append(_event(final))
                        yield b"".join(batch)
                        yield DONE
                        return
                    if self._relayed(payload):
                        batch.append(_event(payload))
                    item = None if self._queue.empty() else self._queue.get_nowait()
                if batch:
                    yield b"".join(batch)
        finally:
            await self.aclose()

    def _relayed(self, chunk: dict[str, Any]) -> bool:
        """Account for one upstream chunk; False when it is not sent now (usage, or held for `details`)."""
        chunk["model"] = self._route.model
        self._last = chunk
        usage = chunk.pop("usage", None)
        if usage:
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return False  # the upstream usage chunk: ours comes last
        finished = False
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content or delta.get("tool_calls"):
                self._deltas += 1
                if self._first_token is None:
                    self._first_token = time.perf_counter()
            if content and self._request.save_response:
                self._texts.setdefault(int(choice.get("index", 0)), []).append(content)
            if choice.get("finish_reason"):
                finished = True
                self._finish[int(choice.get("index", 0))] = choice["finish_reason"]
        if finished and not self._include_usage:
            self._held.append(chunk)  # the last choice chunk carries `details`
            return False
        return True

    def _final(self, ended: float) -> dict[str, Any]:
        """The chunk that carries `details` (and `usage` when asked for); what is left in `_held` goes before it."""
        if self._include_usage or not self._held:
            last = self._last
            final: dict[str, Any] = {
                "id": last.get("id", ""), "object": "chat.completion.chunk", "created": last.get("created", 0),
                "model": self._route.model, "choices": [],
            }
            if self._include_usage:
                final["usage"] = self._usage
        else:
            final = self._held.pop()
        final["details"] = self._details(ended)
        return final

    def _details(self, ended: float) -> dict[str, Any]:
        first_token, usage = self._first_token, self._usage
        tokens = (int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") is not None
                  else self._deltas)
        window = ended - first_token if first_token is not None else 0.0
        if window <= 0:
            window = ended - self._started
        return {
            "time_to_first_token_ms": round((first_token - self._started) * 1000, 3) if first_token else None,
            "total_time_ms": round((ended - self._started) * 1000, 3),
            "tokens_per_second": round(tokens / window, 2) if window > 0 else None,
            "completion_tokens": tokens,
            "provider": self._route.provider.name.value,
        }

    async def _save(self) -> None:
        texts, finish = self._texts, self._finish
        indexes = sorted(set(texts) | set(finish)) or [0]
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(texts.get(i, []))},
                    "finish_reason": finish.get(i)} for i in indexes]
        try:
            await self._service.save(self._principal, self._route, self._request, choices, self._usage, stream=True)
        except Exception:
            log.exception("could not save a streamed response")

    async def aclose(self) -> None:
        """Stop the pump and close the upstream iterator (idempotent; safe while being cancelled)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            pump = self._pump
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            await _close_quietly(self._upstream)


def saved_response_view(row: SavedResponse) -> SavedResponseView:
    return SavedResponseView(
        id=row.id, model=row.model, provider=row.provider, messages=list(row.messages), choices=list(row.choices),
        usage=dict(row.usage), parameters=dict(row.parameters), stream=row.stream, created_at=row.created_at,
    )
