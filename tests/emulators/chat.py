"""Pieces every OpenAI-compatible emulator needs (OpenAI, Fireworks, Together).

Two halves:

* **Serving plumbing** — `RoutedEmulator`: a Litestar app with one catch-all handler that
  records every request, applies the shared `FaultPlan` (status + `retry-after`, delay,
  malformed body), checks the bearer key, then dispatches to regex routes. Error bodies are
  built by a per-emulator callback so each emulator speaks its provider's error shape.
* **Chat / embeddings bodies** — OpenAI-shaped `chat.completion` bodies, SSE
  `chat.completion.chunk` streams (role chunk, content chunks, finish chunk, optional
  `stream_options.include_usage` usage chunk with `choices: []`, then `data: [DONE]`) and
  embeddings (float or base64, as the OpenAI SDK asks by default).

The "model" behind a fine-tune is the sandbox engine's `NearestNeighbourResponder`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import string
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from litestar import Litestar, Request, Response, route
from litestar.datastructures import UploadFile
from litestar.response import Stream

from finetune_service.providers.sandbox_engine import content_text, hashed_embedding, tokens
from tests.emulators.faults import Fault, FaultPlan

_ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24, alphabet: str = _ALNUM) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


# --------------------------------------------------------------------------------------
# Serving plumbing
# --------------------------------------------------------------------------------------


class EmulatorError(Exception):
    """Raise from a route handler to answer with the emulator's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] | None = None
    status: int | None = None
    peer: tuple[str, int] | None = None  # the client's address: one per TCP connection

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)


class EmulatorRequest:
    """What a route handler sees: the Litestar request plus regex groups and parsed query."""

    def __init__(self, request: Request[Any, Any, Any], params: dict[str, str], record: RecordedRequest) -> None:
        self.raw = request
        self.params = params
        self.record = record
        self.method = request.method.upper()
        self.path = request.scope["path"]
        self.query = record.query

    def arg(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return default

    def int_arg(self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise EmulatorError(400, f"Invalid '{name}': expected an integer, got {raw!r}.", param=name) from None
        if value < minimum or (maximum is not None and value > maximum):
            raise EmulatorError(400, f"Invalid '{name}': {value} is out of range.", param=name)
        return value

    async def json(self) -> Any:
        body = await self.raw.body()
        if not body.strip():
            self.record.json = None
            return None
        try:
            data = json.loads(body)
        except ValueError:
            raise EmulatorError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            ) from None
        self.record.json = data
        return data

    async def json_object(self) -> dict[str, Any]:
        data = await self.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise EmulatorError(400, "The request body must be a JSON object.")
        return data

    async def form(self) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
        """(text fields, files as {field: (filename, bytes)}) of a multipart body."""
        content_type = self.raw.headers.get("content-type", "")
        if "multipart/form-data" not in content_type:
            raise EmulatorError(400, "Expected a multipart/form-data body.")
        form = await self.raw.form()
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[key] = (value.filename or "upload", await value.read())
            else:
                fields[key] = str(value)
        self.record.form = fields
        return fields, files


Handler = Callable[[EmulatorRequest], Awaitable[Response[Any]]]
ErrorBody = Callable[[str, EmulatorError], dict[str, Any]]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=json.dumps(body).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers or {},
    )


@dataclass
class RoutedEmulator:
    """Catch-all Litestar app: record -> fault -> auth -> route; state guarded by `lock`."""

    error_body: ErrorBody
    check_auth: Callable[[EmulatorRequest], EmulatorError | None]
    faults: FaultPlan = field(default_factory=FaultPlan)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    routes: list[_Route] = field(default_factory=list)

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append(_Route(method.upper(), re.compile(f"^{pattern}$"), handler))

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        with self.lock:
            return [
                r for r in self.requests if r.method == method.upper() and re.search(path_pattern, r.path)
            ]

    def error_response(self, path: str, error: EmulatorError) -> Response[Any]:
        headers = dict(error.headers)
        # Deliberate client errors must not be retried by Stainless SDKs (they retry 409 too).
        if 400 <= error.status < 500 and error.status not in (408, 429):
            headers.setdefault("x-should-retry", "false")
        return json_response(self.error_body(path, error), error.status, headers)

    def _fault_response(self, path: str, fault: Fault) -> Response[Any] | None:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
            headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
        if fault.malformed:
            return Response(
                content=b'{"object": "truncated", "data": [',
                status_code=fault.status,
                media_type="application/json",
                headers=headers,
            )
        if fault.body is not None:
            return json_response(fault.body, fault.status, headers)
        if fault.delay or fault.status < 400:
            return None  # a hang (delay): serve normally afterwards
        if fault.status == 429:
            error = EmulatorError(
                429,
                "Rate limit reached for requests. Please try again later.",
                type="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        elif fault.status >= 500:
            error = EmulatorError(
                fault.status,
                "The server had an error while processing your request. Sorry about that!",
                type="server_error",
                headers=headers,
            )
        else:
            error = EmulatorError(fault.status, f"Injected {fault.status} error.", headers=headers)
        return self.error_response(path, error)

    async def dispatch(self, request: Request[Any, Any, Any]) -> Response[Any]:
        path = request.scope["path"]
        method = request.method.upper()
        query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        peer = request.scope.get("client")
        record = RecordedRequest(method, path, query, {k.lower(): v for k, v in request.headers.items()},
                                 peer=(peer[0], peer[1]) if peer else None)
        with self.lock:
            self.requests.append(record)
        response = await self._dispatch(request, record)
        record.status = response.status_code
        return response

    async def _dispatch(self, request: Request[Any, Any, Any], record: RecordedRequest) -> Response[Any]:
        path, method = record.path, record.method
        fault = self.faults.take(method, path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            faulted = self._fault_response(path, fault)
            if faulted is not None:
                return faulted
        for candidate in self.routes:
            match = candidate.pattern.match(path)
            if match is None or candidate.method != method:
                continue
            emulator_request = EmulatorRequest(request, match.groupdict(), record)
            auth_error = self.check_auth(emulator_request)
            if auth_error is not None:
                return self.error_response(path, auth_error)
            try:
                return await candidate.handler(emulator_request)
            except EmulatorError as error:
                return self.error_response(path, error)
            except Exception as error:  # an emulator bug must still answer in the provider's shape
                return self.error_response(path, EmulatorError(500, f"emulator crashed: {error!r}",
                                                              type="server_error"))
        known_path = any(r.pattern.match(path) for r in self.routes)
        status = 405 if known_path else 404
        return self.error_response(path, EmulatorError(status, f"Invalid URL ({method} {path})"))

    def build_app(self) -> Litestar:
        emulator = self

        @route(
            ["/", "/{path:path}"],
            http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
            status_code=200,
        )
        async def catch_all(request: Request[Any, Any, Any]) -> Response[Any]:
            return await emulator.dispatch(request)

        return Litestar(route_handlers=[catch_all], debug=False, request_max_body_size=200 * 1024 * 1024)


def bearer_key(request: EmulatorRequest) -> str | None:
    header = request.raw.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def masked_key(key: str) -> str:
    """How OpenAI echoes a wrong key: first and last few characters only."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * 8}{key[-4:]}"


# --------------------------------------------------------------------------------------
# Chat completions and embeddings
# --------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """Word-ish token count; close enough for usage numbers that add up."""
    return len(tokens(text)) + text.count("?") + text.count("!") + text.count(".")


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    return sum(3 + count_tokens(content_text(m.get("content"))) for m in messages) + 3


def validate_chat_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a chat request, with OpenAI's 400s for the common mistakes."""
    if not body.get("model"):
        raise EmulatorError(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EmulatorError(
            400, "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages", code="empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in {
            "system", "developer", "user", "assistant", "tool", "function",
        }:
            raise EmulatorError(
                400, f"Invalid value for 'messages[{index}].role'.", param=f"messages.[{index}].role",
                code="invalid_value",
            )
    n = body.get("n", 1)
    if n not in (None, 1):
        raise EmulatorError(400, "The emulator only supports n=1.", param="n")
    return messages


def limit_answer(answer: str, body: dict[str, Any]) -> tuple[str, str]:
    """(answer, finish_reason), truncating to `max_completion_tokens`/`max_tokens` words."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        words = answer.split(" ")
        if len(words) > limit:
            return " ".join(words[:limit]), "length"
    return answer, "stop"


def usage_body(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def chat_completion_body(
    model: str, answer: str, messages: Sequence[dict[str, Any]], *, finish_reason: str = "stop",
    completion_id: str | None = None, system_fingerprint: str | None = "fp_emulator",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": completion_id or random_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": usage_body(prompt_tokens(messages), count_tokens(answer)),
        "service_tier": "default",
    }
    if system_fingerprint is not None:
        body["system_fingerprint"] = system_fingerprint
    return body


def _split_pieces(answer: str, words_per_piece: int = 2) -> list[str]:
    words = answer.split(" ")
    pieces = []
    for start in range(0, len(words), words_per_piece):
        piece = " ".join(words[start:start + words_per_piece])
        pieces.append(piece if start == 0 else " " + piece)
    return [p for p in pieces if p] or [""]


def chat_completion_chunks(
    model: str, answer: str, messages: Sequence[dict[str, Any]], *, include_usage: bool,
    finish_reason: str = "stop", usage_on_final_chunk: bool = False,
    system_fingerprint: str | None = "fp_emulator",
) -> list[dict[str, Any]]:
    """The chunks of a streamed answer.

    OpenAI (`include_usage=True`): every chunk carries `"usage": null` and one extra last chunk
    has `choices: []` and the usage. Together/Fireworks style (`usage_on_final_chunk=True`):
    the usage rides on the finishing chunk.
    """
    completion_id = random_id("chatcmpl-", 29)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "choices": choices,
        }
        if system_fingerprint is not None:
            body["system_fingerprint"] = system_fingerprint
        if include_usage or usage_on_final_chunk:
            body["usage"] = usage
        return body

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    usage = usage_body(prompt_tokens(messages), count_tokens(answer))
    chunks = [chunk([choice({"role": "assistant", "content": "", "refusal": None})])]
    chunks += [chunk([choice({"content": piece})]) for piece in _split_pieces(answer)]
    chunks.append(chunk([choice({}, finish_reason)], usage if usage_on_final_chunk else None))
    if include_usage and not usage_on_final_chunk:
        chunks.append(chunk([], usage))
    return chunks


async def sse_events(chunks: Sequence[dict[str, Any]], delay: float = 0.0) -> AsyncIterator[bytes]:
    for item in chunks:
        yield f"data: {json.dumps(item)}\n\n".encode()
        if delay:
            await asyncio.sleep(delay)
    yield b"data: [DONE]\n\n"


def sse_response(chunks: Sequence[dict[str, Any]], delay: float = 0.0) -> Stream:
    return Stream(
        sse_events(chunks, delay),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def chat_answer_response(
    body: dict[str, Any], model: str, answer: str, messages: Sequence[dict[str, Any]], *,
    usage_on_final_chunk: bool = False,
) -> Response[Any] | Stream:
    """A plain or SSE answer for `body`, honouring `stream`, `stream_options` and token limits."""
    answer, finish = limit_answer(answer, body)
    if body.get("stream"):
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        return sse_response(chat_completion_chunks(
            model, answer, messages, include_usage=include_usage, finish_reason=finish,
            usage_on_final_chunk=usage_on_final_chunk,
        ))
    return json_response(chat_completion_body(model, answer, messages, finish_reason=finish))


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise EmulatorError(400, "'input' must be a non-empty string or array.", param="input")
    texts: list[str] = []
    for item in raw:
        if isinstance(item, str):
            if not item:
                raise EmulatorError(400, "'input' cannot contain an empty string.", param="input")
            texts.append(item)
        elif isinstance(item, int):
            texts.append(f"tok{item}")
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            texts.append(" ".join(f"tok{t}" for t in item))
        else:
            raise EmulatorError(400, "'input' must be strings or token arrays.", param="input")
    if raw and all(isinstance(item, int) for item in raw):
        texts = [" ".join(texts)]  # one token array, not one input per token
    return texts


def embeddings_body(model: str, texts: Sequence[str], *, dimensions: int, encoding_format: str = "float") -> dict:
    data = []
    for index, text in enumerate(texts):
        vector = hashed_embedding(text, dimensions)
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    used = sum(count_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}}
