"""A loopback emulator of Together AI's HTTP API, as the real `together` 3.1.1 SDK sees it.

Contract: `../shared/specs/PROVIDERS.md` §1 (observed SDK behaviour) and the published OpenAPI
spec (`together-openapi.yaml`, checked by `test_together_contract.py`). Point the SDK at it with
`AsyncTogether(api_key=..., base_url="http://127.0.0.1:PORT")` — no `/v1`, the 3.x SDK adds it.

What it does:
- files: the SDK's 3-step upload (POST /v1/files -> 302, PUT /upload/{id}, POST .../preprocess)
  with Together's server-side JSONL validation (§1.4), duplicate detection by checksum (409),
  list / retrieve / delete / content;
- fine-tunes: limits, estimate-price, create / list / retrieve / delete / cancel, events,
  checkpoints and metrics. A job's status is a pure function of the clock (`timeline_at`):
  pending -> queued -> running -> compressing -> uploading -> completed, with matching events;
- inference: chat completions (plain and SSE) and embeddings. A completed job's
  `model_output_name` answers with the nearest training example (`NearestNeighbourResponder`).

Every request first consults `faults` (a `FaultPlan`) and is recorded in `requests`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs

from finetune_service.providers.sandbox_engine import (
    RUNNING_STEPS,
    NearestNeighbourResponder,
    hashed_embedding,
    simulated_loss,
    timeline_at,
    tokens,
)
from tests.emulators.faults import FaultPlan
from tests.emulators.media import emulated_png, parse_multipart, spoken_text, transcript_body
from tests.emulators.server import answer_lifespan

DEFAULT_API_KEY = "test-together-key"
NAMESPACE = "emulator-user"
MAX_SUFFIX_LENGTH = 40

_LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _limits(model: str, *, seq: int, rank: int = 64, full: bool = True, max_bs: int = 32) -> dict[str, Any]:
    return {
        "model_name": model,
        "max_num_epochs": 20,
        "max_num_evals": 100,
        "max_num_checkpoints": 20,
        "max_learning_rate": 1.0,
        "min_learning_rate": 1e-6,
        "default_gradient_accumulation_steps": 1,
        "max_seq_length_sft": seq,
        "max_seq_length_dpo": seq,
        "min_max_seq_length": 512,
        "merge_output_lora": True,
        "supports_vision": False,
        "supports_tools": True,
        "supports_reasoning": False,
        "supports_full_training": full,
        "lora_training": {
            "default_rank": 16,
            "max_rank": rank,
            "min_batch_size": 8,
            "max_batch_size": max_bs,
            "max_batch_size_dpo": max_bs // 2,
            "target_modules": list(_LORA_MODULES),
        },
        "full_training": {"min_batch_size": 8, "max_batch_size": 16, "max_batch_size_dpo": 8} if full else None,
    }


# The emulator's fine-tuning catalog (GET /v1/fine-tunes/models/supported and /limits).
_CATALOG: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": {"seq": 8192},
    "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference": {"seq": 8192, "full": False, "max_bs": 16},
    "meta-llama/Llama-3.2-3B-Instruct": {"seq": 8192},
    "Qwen/Qwen3-8B": {"seq": 16384},
    "Qwen/Qwen2.5-7B-Instruct": {"seq": 16384},
    "mistralai/Mistral-7B-Instruct-v0.2": {"seq": 8192},
}
FINE_TUNABLE_MODELS: dict[str, dict[str, Any]] = {name: _limits(name, **kw) for name, kw in _CATALOG.items()}
# Serverless inference models besides the fine-tunable ones.
CHAT_MODELS = {"meta-llama/Llama-3.3-70B-Instruct-Turbo", *FINE_TUNABLE_MODELS}
EMBEDDING_MODELS = {"BAAI/bge-base-en-v1.5", "intfloat/multilingual-e5-large-instruct"}

FILE_PURPOSES = {"fine-tune", "calibration", "eval", "batch-api", "eval-sample", "eval-output", "eval-summary"}
FINISHED_STATUSES = {"completed", "cancelled", "error", "user_error"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _param_count(model: str) -> int:
    match = re.search(r"(\d+(?:\.\d+)?)B", model)
    return int(float(match.group(1)) * 1e9) if match else 7_000_000_000


# --------------------------------------------------------------------------------------------
# Server-side dataset validation (PROVIDERS.md §1.4)
# --------------------------------------------------------------------------------------------

_FORMAT_COLUMNS: dict[str, tuple[set[str], set[str]]] = {
    # format: (required columns, optional extra columns)
    "GENERAL": ({"text"}, set()),
    "CONVERSATION": ({"messages"}, {"tools"}),
    "INSTRUCTION": ({"prompt", "completion"}, set()),
    "PREFERENCE_OPENAI": ({"input", "preferred_output", "non_preferred_output"}, set()),
}
_ROLES = {"system", "user", "assistant", "tool"}
_IMAGE_URL = re.compile(r"^data:image/(jpeg|png|webp);base64,")


class DatasetInvalid(Exception):
    def __init__(self, message: str, line_number: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line_number = line_number


def _check_content(content: Any, role: str, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise DatasetInvalid(f"{where}: `content` must be a string or a non-empty list of content parts")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url":
            if role != "user":
                raise DatasetInvalid(f"{where}: images are only allowed in user messages")
            url = (part.get("image_url") or {}).get("url", "")
            if not isinstance(url, str) or not _IMAGE_URL.match(url):
                raise DatasetInvalid(f"{where}: image_url must be a base64 data URL (jpeg, png or webp)")
            continue
        raise DatasetInvalid(f"{where}: unknown content part {part!r}")


def _check_messages(messages: Any, *, require_assistant: bool, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DatasetInvalid(f"{where}: `messages` must be a non-empty list")
    previous = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetInvalid(f"{where}: message {i} must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise DatasetInvalid(f"{where}: message {i} has invalid role {role!r}; expected one of {sorted(_ROLES)}")
        if role == previous:
            raise DatasetInvalid(
                f"{where}: roles must alternate, but messages {i - 1} and {i} are both {role!r}"
            )
        previous = role
        if "content" in message and message["content"] is not None:
            _check_content(message["content"], role, f"{where}, message {i}")
        if "weight" in message and (type(message["weight"]) is not int or message["weight"] not in (0, 1)):
            raise DatasetInvalid(f"{where}: message {i} weight must be 0 or 1")
    if require_assistant and not any(m.get("role") == "assistant" for m in messages):
        raise DatasetInvalid(f"{where}: a conversation needs at least one assistant message")


def _detect_format(record: dict[str, Any], where: str) -> str:
    matches = [fmt for fmt, (required, _) in _FORMAT_COLUMNS.items() if required <= record.keys()]
    if len(matches) > 1:
        raise DatasetInvalid(f"{where}: Found multiple dataset formats in one line: {', '.join(matches)}")
    if not matches:
        raise DatasetInvalid(
            f"{where}: Could not detect a format. Expected one of: "
            + "; ".join(" + ".join(sorted(req)) for req, _ in _FORMAT_COLUMNS.values())
        )
    required, optional = _FORMAT_COLUMNS[matches[0]]
    for key in record:
        if key not in required | optional:
            raise DatasetInvalid(f'{where}: Found extra column "{key}"')
    return matches[0]


def validate_dataset(data: bytes, purpose: str = "fine-tune") -> dict[str, Any]:
    """Together's server-side check of a JSONL training file; returns the validation report."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetInvalid(f"File is not valid UTF-8: {exc}") from None
    dataset_format = None
    nlines = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"Line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DatasetInvalid(f"{where}: Each line must be a JSON object; could not parse JSON", number) from None
        if not isinstance(record, dict):
            raise DatasetInvalid(f"{where}: Each line must be a JSON object", number)
        try:
            fmt = _detect_format(record, where)
            if dataset_format is not None and fmt != dataset_format:
                raise DatasetInvalid(f"{where}: All lines must share one format; found {fmt} after {dataset_format}")
            dataset_format = fmt
            if fmt == "CONVERSATION":
                _check_messages(record["messages"], require_assistant=purpose != "eval", where=where)
            elif fmt == "INSTRUCTION":
                _check_content(record["prompt"], "user", f"{where}, prompt")
                _check_content(record["completion"], "assistant", f"{where}, completion")
            elif fmt == "GENERAL":
                if not isinstance(record["text"], str):
                    raise DatasetInvalid(f"{where}: `text` must be a string")
            else:
                if not isinstance(record["input"], dict):
                    raise DatasetInvalid(f"{where}: `input` must be an object with `messages`")
                messages = record["input"].get("messages") or []
                _check_messages(messages, require_assistant=False, where=where)
                if messages[-1].get("role") == "assistant":
                    raise DatasetInvalid(f"{where}: the last input message must not be from the assistant")
                for key in ("preferred_output", "non_preferred_output"):
                    output = record[key]
                    if (
                        not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict)
                        or output[0].get("role") != "assistant" or "content" not in output[0]
                    ):
                        raise DatasetInvalid(f"{where}: `{key}` must be a list of exactly one assistant message")
        except DatasetInvalid as exc:
            raise DatasetInvalid(exc.message, number) from None
        nlines += 1
    if nlines < 1:
        raise DatasetInvalid("The file has no samples; at least 1 is required")
    return {"valid": True, "dataset_format": dataset_format, "nlines": nlines}


# --------------------------------------------------------------------------------------------
# A tiny ASGI layer
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else {}

    def form(self) -> dict[str, str]:
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            message = BytesParser(policy=policy.default).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.body
            )
            fields: dict[str, str] = {}
            for part in message.iter_parts():
                name = str(part.get_param("name", header="content-disposition"))
                content = part.get_content()
                fields[name] = content.decode() if isinstance(content, bytes) else str(content)
            return fields
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(data).encode(), {"content-type": "application/json", **(headers or {})})


def error_response(
    status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> Response:
    """Together's error body (spec `ErrorData`, PROVIDERS.md §5.1)."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}, **extra}
    return json_response(body, status, headers)


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class EmulatedFile:
    id: str
    filename: str
    purpose: str
    file_type: str
    checksum: str
    created_at: int
    content: bytes | None = None
    processing_status: str = "PENDING"
    validation_report: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "created_at": self.created_at,
            "filename": self.filename,
            "bytes": len(self.content or b""),
            "purpose": self.purpose,
            "FileType": self.file_type,
            "Processed": self.processing_status in ("COMPLETED", "INVALID_FORMAT", "FAILED"),
            "processing_status": self.processing_status,
        }
        if self.validation_report is not None:
            body["validation_report"] = self.validation_report
        return body


@dataclass
class EmulatedJob:
    id: str
    request: dict[str, Any]  # the create body as sent, normalized
    created_at: float
    responder: NearestNeighbourResponder
    token_count: int
    train_lines: int
    train_bytes: int
    output_name: str
    cancel_requested_at: float | None = None
    failed_at: float | None = None
    failure_message: str | None = None
    failure_status: str = "error"


@dataclass(frozen=True)
class _Event:
    at: float
    type: str
    message: str
    step: int = 0
    level: str = "info"
    checkpoint_path: str = ""
    model_path: str = ""


Handler = Callable[..., Awaitable[Response]]


# Images and audio (together-openapi.yaml /images/generations, /audio/transcriptions|translations)
IMAGE_MODELS = ("black-forest-labs/FLUX.1-schnell-Free", "black-forest-labs/FLUX.1-schnell",
                "black-forest-labs/FLUX.1.1-pro")
SPEECH_MODEL = "openai/whisper-large-v3"
AUDIO_SUFFIXES = ("wav", "mp3", "m4a", "webm", "flac", "ogg", "opus", "aac")


class TogetherEmulator:
    """The emulator; `.app` is the ASGI application (the instance itself)."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, step_seconds: float = 0.2) -> None:
        self.api_key = api_key
        self.step_seconds = step_seconds
        self.faults = FaultPlan()
        self.requests: list[tuple[str, str, Any]] = []
        self.files: dict[str, EmulatedFile] = {}
        self.jobs: dict[str, EmulatedJob] = {}
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = time.time
        route = re.compile
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", route(r"/v1/files"), self.files_create),
            ("GET", route(r"/v1/files"), self.files_list),
            ("PUT", route(r"/upload/(?P<file_id>[^/]+)"), self.files_put),
            ("POST", route(r"/v1/files/(?P<file_id>[^/]+)/preprocess"), self.files_preprocess),
            ("GET", route(r"/v1/files/(?P<file_id>[^/]+)/content"), self.files_content),
            ("GET", route(r"/v1/files/(?P<file_id>[^/]+)"), self.files_retrieve),
            ("DELETE", route(r"/v1/files/(?P<file_id>[^/]+)"), self.files_delete),
            ("GET", route(r"/v1/fine-tunes/models/limits"), self.models_limits),
            ("GET", route(r"/v1/fine-tunes/models/supported"), self.models_supported),
            ("POST", route(r"/v1/fine-tunes/estimate-price"), self.estimate_price),
            ("POST", route(r"/v1/fine-tunes"), self.jobs_create),
            ("GET", route(r"/v1/fine-tunes"), self.jobs_list),
            ("GET", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)/events"), self.jobs_events),
            ("GET", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)/checkpoints"), self.jobs_checkpoints),
            ("GET", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)/metrics"), self.jobs_metrics),
            ("POST", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)/cancel"), self.jobs_cancel),
            ("GET", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)"), self.jobs_retrieve),
            ("DELETE", route(r"/v1/fine-tunes/(?P<job_id>[^/]+)"), self.jobs_delete),
            ("POST", route(r"/v1/chat/completions"), self.chat_completions),
            ("POST", route(r"/v1/embeddings"), self.embeddings),
            ("POST", route(r"/v1/images/generations"), self.images_generate),
            ("POST", route(r"/v1/audio/transcriptions"), self.audio_transcriptions),
            ("POST", route(r"/v1/audio/translations"), self.audio_translations),
        ]

    @property
    def app(self) -> TogetherEmulator:
        return self

    # ---------------------------------------------------------------- test helpers

    def fail_job(self, job_id: str, message: str, *, user_error: bool = False) -> None:
        """Make a running job fail now with `message` (status `error`, or `user_error`)."""
        with self.lock:
            job = self.jobs[job_id]
            if self._status(job)[0] in FINISHED_STATUSES:
                raise ValueError(f"job {job_id} has already finished")
            job.failed_at = self.clock()
            job.failure_message = message
            job.failure_status = "user_error" if user_error else "error"

    def requests_to(self, method: str, path: str) -> list[Any]:
        """Bodies of the recorded requests with this method and path."""
        return [body for m, p, body in self.requests if m == method and p == path]

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(
            method=scope["method"],
            path=scope["path"],
            query={k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()},
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
        )
        response = await self.handle(request)
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if response.stream is None:
            await send({"type": "http.response.body", "body": response.body})
            return
        async for chunk in response.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _record(self, request: Request) -> None:
        recorded: Any = None
        ctype = request.headers.get("content-type", "")
        try:
            if ctype.startswith("application/json") and request.body:
                recorded = request.json()
            elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                recorded = request.form()
        except (ValueError, UnicodeDecodeError):
            recorded = None
        with self.lock:
            self.requests.append((request.method, request.path, recorded))

    async def handle(self, request: Request) -> Response:
        self._record(request)
        fault = self.faults.take(request.method, request.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.malformed:
                return Response(200, b'{"id": "truncated', {"content-type": "application/json"})
            if not fault.delay:
                headers = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
                if fault.body is not None:
                    return json_response(fault.body, fault.status, headers)
                kind = "dynamic_request_limited" if fault.status == 429 else (
                    "server_error" if fault.status >= 500 else "invalid_request_error")
                return error_response(fault.status, f"Emulated fault: HTTP {fault.status}", type_=kind,
                                      headers=headers)
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                if not request.path.startswith("/upload/") and not self._authorized(request):
                    return error_response(
                        401, "Invalid API key provided. You can find your API key at "
                        "https://api.together.ai/settings/api-keys.", code="invalid_api_key",
                    )
                try:
                    return await handler(request, **match.groupdict())
                except json.JSONDecodeError:
                    return error_response(400, "Request body is not valid JSON")
        return error_response(404, f"Unknown endpoint {request.method} {request.path}", code="not_found")

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.api_key}"

    # ---------------------------------------------------------------- images and audio

    async def images_generate(self, request: Request) -> Response:
        body = request.json()
        prompt, model = body.get("prompt"), body.get("model")
        if not isinstance(prompt, str) or not prompt.strip():
            return error_response(400, "prompt is required", param="prompt")
        if model not in IMAGE_MODELS:
            return error_response(404, f"Unable to access model {model}. Please visit https://api.together.ai/models "
                                  "to view the list of supported models.", code="model_not_available")
        n, width, height = body.get("n", 1), body.get("width", 1024), body.get("height", 1024)
        if not isinstance(n, int) or not 1 <= n <= 4:
            return error_response(400, "n must be between 1 and 4", param="n")
        if not all(isinstance(v, int) and 64 <= v <= 1792 for v in (width, height)):
            return error_response(400, "width and height must be between 64 and 1792", param="width")
        response_format = body.get("response_format", "url")
        if response_format not in ("base64", "url"):
            return error_response(400, f"Invalid response_format {response_format!r}", param="response_format")
        data: list[dict[str, Any]] = []
        for index in range(n):
            png = emulated_png(f"{model}: {prompt}", width // 4, height // 4, index)
            if response_format == "base64":
                data.append({"index": index, "type": "b64_json", "b64_json": base64.b64encode(png).decode()})
            else:
                data.append({"index": index, "type": "url",
                             "url": f"https://api.together.ai/emulated/{uuid.uuid4().hex}.png"})
        return json_response({"id": f"img-{uuid.uuid4().hex[:16]}", "model": model, "object": "list", "data": data})

    async def _audio(self, request: Request, task: str) -> Response:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return error_response(400, "Expected multipart/form-data")
        fields, files = parse_multipart(ctype, request.body)
        if "file" not in files:
            return error_response(400, "file is required", param="file")
        model = fields.get("model", SPEECH_MODEL)
        if model != SPEECH_MODEL:
            return error_response(400, f"Invalid model {model!r}; use {SPEECH_MODEL}", param="model")
        filename, content = files["file"]
        if filename.rsplit(".", 1)[-1].lower() not in AUDIO_SUFFIXES:
            return error_response(400, "Unsupported audio format; use .wav, .mp3, .m4a, .webm or .flac", param="file")
        response_format = fields.get("response_format", "json")
        if response_format not in ("json", "verbose_json"):
            return error_response(400, f"Invalid response_format {response_format!r}", param="response_format")
        text, seconds = spoken_text(content)
        language = fields.get("language") or "en"
        if task == "translate":
            text = f"(translated to {language}) {text}"
        result = transcript_body(text, seconds, response_format, task=task, language=language)
        assert isinstance(result, dict)
        result.pop("usage", None)
        return json_response(result)

    async def audio_transcriptions(self, request: Request) -> Response:
        return await self._audio(request, "transcribe")

    async def audio_translations(self, request: Request) -> Response:
        return await self._audio(request, "translate")

    # ---------------------------------------------------------------- files

    async def files_create(self, request: Request) -> Response:
        form = request.form()
        purpose, file_name = form.get("purpose", ""), form.get("file_name", "")
        file_type, checksum = form.get("file_type", "jsonl"), form.get("checksum", "")
        if purpose not in FILE_PURPOSES:
            return error_response(400, f"Invalid purpose {purpose!r}", param="purpose")
        if not file_name:
            return error_response(400, "file_name is required")
        if file_type not in ("jsonl", "parquet", "csv"):
            return error_response(400, f"Invalid file_type {file_type!r}")
        with self.lock:
            for existing in self.files.values():
                if checksum and existing.checksum == checksum and existing.content is not None:
                    # The SDK reads the top-level `file_id`; `x-should-retry: false` stops Stainless
                    # from retrying the 409 (PROVIDERS.md §1.3, §7.9).
                    return error_response(
                        409, f"A file with checksum {checksum} already exists: {existing.id}",
                        code="file_already_exists", headers={"x-should-retry": "false"}, file_id=existing.id,
                    )
            file = EmulatedFile(
                id=f"file-{uuid.uuid4()}", filename=file_name, purpose=purpose, file_type=file_type,
                checksum=checksum, created_at=int(self.clock()),
            )
            self.files[file.id] = file
        host = request.headers.get("host", "127.0.0.1")
        return Response(302, b"", {"location": f"http://{host}/upload/{file.id}", "x-together-file-id": file.id})

    async def files_put(self, request: Request, file_id: str) -> Response:
        with self.lock:
            file = self.files.get(file_id)
            if file is None:
                return Response(404, b"NoSuchUpload", {"content-type": "text/plain"})
            file.content = request.body
        return Response(200)

    async def files_preprocess(self, request: Request, file_id: str) -> Response:
        with self.lock:
            file = self.files.get(file_id)
            if file is None:
                return error_response(404, f"File {file_id} not found")
            if file.content is None:
                return error_response(400, f"File {file_id} has not been uploaded yet")
            if file.file_type == "jsonl":
                try:
                    report = validate_dataset(file.content, file.purpose)
                    file.processing_status = "COMPLETED"
                    file.validation_report = {**report, "file_id": file.id}
                except DatasetInvalid as exc:
                    file.processing_status = "INVALID_FORMAT"
                    file.validation_report = {
                        "valid": False, "error_type": "INVALID_FORMAT", "message": exc.message,
                        "line_number": exc.line_number, "file_id": file.id,
                    }
            else:
                file.processing_status = "COMPLETED"
                file.validation_report = {"valid": True, "file_id": file.id}
            return json_response(file.wire())

    async def files_list(self, request: Request) -> Response:
        with self.lock:
            return json_response({"data": [f.wire() for f in self.files.values() if f.content is not None]})

    async def files_retrieve(self, request: Request, file_id: str) -> Response:
        file = self.files.get(file_id)
        if file is None:
            return error_response(404, f"File {file_id} not found")
        return json_response(file.wire())

    async def files_delete(self, request: Request, file_id: str) -> Response:
        with self.lock:
            if self.files.pop(file_id, None) is None:
                return error_response(404, f"File {file_id} not found")
        return json_response({"id": file_id, "deleted": True})

    async def files_content(self, request: Request, file_id: str) -> Response:
        file = self.files.get(file_id)
        if file is None or file.content is None:
            return error_response(404, f"File {file_id} not found")
        return Response(200, file.content, {"content-type": "text/plain"})

    # ---------------------------------------------------------------- catalog and pricing

    async def models_limits(self, request: Request) -> Response:
        model = request.query.get("model_name", "")
        limits = FINE_TUNABLE_MODELS.get(model)
        if limits is None:
            # The one endpoint whose 404 body is a bare {"message"} (PROVIDERS.md §5.1).
            return json_response({"message": f"Model {model} is not available for fine-tuning"}, 404)
        return json_response(limits)

    async def models_supported(self, request: Request) -> Response:
        return json_response({"models": list(FINE_TUNABLE_MODELS)})

    def _usable_file(self, file_id: str | None) -> EmulatedFile | None:
        file = self.files.get(file_id or "")
        if file is None or file.processing_status != "COMPLETED" or file.content is None:
            return None
        return file

    async def estimate_price(self, request: Request) -> Response:
        body = request.json()
        train = self._usable_file(body.get("training_file"))
        if train is None:
            return json_response({"estimation_available": False, "unavailable_reason": "train_file_not_validated"})
        if body.get("validation_file") and self._usable_file(body["validation_file"]) is None:
            return json_response({"estimation_available": False, "unavailable_reason": "eval_file_not_validated"})
        train_tokens = float(len(tokens((train.content or b"").decode())) * int(body.get("n_epochs") or 1))
        return json_response({
            "estimation_available": True, "allowed_to_proceed": True,
            "estimated_total_price": round(max(train_tokens * 0.48e-6, 6.0), 4),
            "estimated_train_token_count": train_tokens, "estimated_eval_token_count": 0.0,
            "user_limit": 1000.0,
        })

    # ---------------------------------------------------------------- fine-tunes

    async def jobs_create(self, request: Request) -> Response:
        body = request.json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "`model` is required", param="model")
        limits = FINE_TUNABLE_MODELS.get(model)
        if limits is None:
            return error_response(400, f"Model {model} is not available for fine-tuning", param="model",
                                  code="model_not_available")
        train = self._usable_file(body.get("training_file"))
        if train is None:
            return error_response(400, f"Training file {body.get('training_file')!r} was not found or is not "
                                  "a valid fine-tuning file", param="training_file")
        validation_file = body.get("validation_file") or None  # the SDK sends "" for none (§1.5)
        if validation_file and self._usable_file(validation_file) is None:
            return error_response(400, f"Validation file {validation_file!r} was not found or is not valid",
                                  param="validation_file")
        problem = self._check_job_params(body, limits)
        if problem:
            return error_response(400, problem)
        training_type = body.get("training_type") or {
            "type": "Lora", "lora_r": limits["lora_training"]["default_rank"],
            "lora_alpha": 2 * limits["lora_training"]["default_rank"], "lora_dropout": 0.0,
            "lora_trainable_modules": "all-linear",
        }
        method = (body.get("training_method") or {}).get("method", "sft")
        bounds = limits["full_training"] if training_type["type"] == "Full" else limits["lora_training"]
        batch_size = body.get("batch_size", "max")
        if batch_size == "max":
            batch_size = bounds["max_batch_size_dpo" if method == "dpo" else "max_batch_size"]
        suffix = body.get("suffix")
        now = self.clock()
        job_id = f"ft-{uuid.uuid4()}"
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
        output_name = f"{NAMESPACE}/{model.rsplit('/', 1)[-1]}-{suffix + '-' if suffix else ''}{digest}"
        records = [json.loads(line) for line in (train.content or b"").decode().split("\n") if line.strip()]
        normalized = {
            **body, "validation_file": validation_file or "", "training_type": training_type,
            "batch_size": batch_size, "training_method": body.get("training_method")
            or {"method": "sft", "train_on_inputs": "auto"},
        }
        normalized.setdefault("random_seed", 42)
        if normalized["random_seed"] is None:
            normalized["random_seed"] = 42
        job = EmulatedJob(
            id=job_id, request=normalized, created_at=now,
            responder=NearestNeighbourResponder.train(records),
            token_count=len(tokens((train.content or b"").decode())) * int(body.get("n_epochs") or 1),
            train_lines=len(records), train_bytes=len(train.content or b""), output_name=output_name,
        )
        with self.lock:
            self.jobs[job_id] = job
        return json_response(self._job_wire(job, truncated=True))

    @staticmethod
    def _check_job_params(body: dict[str, Any], limits: dict[str, Any]) -> str | None:
        n_epochs = body.get("n_epochs", 1)
        if not isinstance(n_epochs, int) or not 1 <= n_epochs <= limits["max_num_epochs"]:
            return f"n_epochs must be between 1 and {limits['max_num_epochs']}"
        lr = body.get("learning_rate", 1e-5)
        if not isinstance(lr, int | float) or not limits["min_learning_rate"] <= lr <= limits["max_learning_rate"]:
            return f"learning_rate must be between {limits['min_learning_rate']} and {limits['max_learning_rate']}"
        if not 1 <= int(body.get("n_checkpoints") or 1) <= limits["max_num_checkpoints"]:
            return f"n_checkpoints must be between 1 and {limits['max_num_checkpoints']}"
        if not 0 <= int(body.get("n_evals") or 0) <= limits["max_num_evals"]:
            return f"n_evals must be between 0 and {limits['max_num_evals']}"
        training_type = body.get("training_type") or {}
        if training_type.get("type") == "Full" and limits["full_training"] is None:
            return f"Full fine-tuning is not supported for {limits['model_name']}"
        if training_type.get("type") == "Lora" and training_type.get("lora_r", 0) > limits["lora_training"]["max_rank"]:
            return f"lora_r must be at most {limits['lora_training']['max_rank']}"
        suffix = body.get("suffix")
        if suffix is not None and (len(suffix) > MAX_SUFFIX_LENGTH or not re.fullmatch(r"[A-Za-z0-9._-]*", suffix)):
            return f"suffix must be at most {MAX_SUFFIX_LENGTH} characters of letters, digits, '.', '_' or '-'"
        return None

    def _job(self, job_id: str) -> EmulatedJob | None:
        return self.jobs.get(job_id)

    def _not_found(self, job_id: str) -> Response:
        return error_response(404, f"Fine-tune job {job_id} not found", code="not_found")

    async def jobs_list(self, request: Request) -> Response:
        with self.lock:
            return json_response({"data": [self._job_wire(j, truncated=True) for j in self.jobs.values()]})

    async def jobs_retrieve(self, request: Request, job_id: str) -> Response:
        job = self._job(job_id)
        return self._not_found(job_id) if job is None else json_response(self._job_wire(job, truncated=False))

    async def jobs_delete(self, request: Request, job_id: str) -> Response:
        with self.lock:
            if self.jobs.pop(job_id, None) is None:
                return self._not_found(job_id)
        return json_response({"message": f"Fine-tune job {job_id} deleted"})

    async def jobs_cancel(self, request: Request, job_id: str) -> Response:
        with self.lock:
            job = self._job(job_id)
            if job is None:
                return self._not_found(job_id)
            status, _ = self._status(job)
            if status in FINISHED_STATUSES:
                return error_response(400, f"Fine-tune job {job_id} has already finished ({status})")
            if job.cancel_requested_at is None:
                job.cancel_requested_at = self.clock()
            return json_response(self._job_wire(job, truncated=True))

    async def jobs_events(self, request: Request, job_id: str) -> Response:
        job = self._job(job_id)
        if job is None:
            return self._not_found(job_id)
        return json_response({"data": [self._event_wire(job, e) for e in self._events(job)]})

    async def jobs_checkpoints(self, request: Request, job_id: str) -> Response:
        job = self._job(job_id)
        if job is None:
            return self._not_found(job_id)
        kind = "adapter" if job.request["training_type"]["type"] == "Lora" else "model"
        data = [
            {"step": e.step, "path": e.checkpoint_path, "created_at": _iso(e.at),
             "checkpoint_type": "Final" if e.type == "job_complete" else "Intermediate", "checkpoint": kind}
            for e in self._events(job) if e.checkpoint_path
        ]
        return json_response({"data": list(reversed(data))})  # newest first, like the API

    async def jobs_metrics(self, request: Request, job_id: str) -> Response:
        job = self._job(job_id)
        if job is None:
            return self._not_found(job_id)
        _, step = self._status(job)
        lr = float(job.request.get("learning_rate", 1e-5))
        return json_response({"metrics": [
            {"train/loss": simulated_loss(s), "train/learning_rate": lr, "train/global_step": float(s)}
            for s in range(1, step + 1)
        ]})

    # ---------------------------------------------------------------- the job clock

    def _natural(self, elapsed: float) -> tuple[str, int]:
        point = timeline_at(elapsed, self.step_seconds)
        if point.stage == "validating":
            return "pending", 0
        if point.stage == "queued":
            return "queued", 0
        if point.stage == "running":
            return "running", point.step
        if self.step_seconds <= 0:
            return "completed", RUNNING_STEPS
        after = elapsed - (2 + RUNNING_STEPS) * self.step_seconds
        if after < self.step_seconds:
            return "compressing", RUNNING_STEPS
        if after < 2 * self.step_seconds:
            return "uploading", RUNNING_STEPS
        return "completed", RUNNING_STEPS

    def _frozen_at(self, job: EmulatedJob) -> float | None:
        marks = [t for t in (job.cancel_requested_at, job.failed_at) if t is not None]
        return min(marks) if marks else None

    def _status(self, job: EmulatedJob, now: float | None = None) -> tuple[str, int]:
        now = self.clock() if now is None else now
        frozen = self._frozen_at(job)
        status, step = self._natural(min(now, frozen if frozen is not None else now) - job.created_at)
        if frozen is None or status == "completed":
            return status, step
        if job.failed_at is not None and job.failed_at == frozen:
            return job.failure_status, step
        assert job.cancel_requested_at is not None
        return ("cancelled" if now - job.cancel_requested_at >= self.step_seconds else "cancel_requested"), step

    def _events(self, job: EmulatedJob) -> list[_Event]:
        """Every event that has happened by now, oldest first."""
        s, t0 = self.step_seconds, job.created_at
        n_ckpt = max(1, int(job.request.get("n_checkpoints") or 1))
        ckpt_steps = {round(RUNNING_STEPS * i / n_ckpt) for i in range(1, n_ckpt)} - {0, RUNNING_STEPS}
        base = f"s3://together-emulator/finetune/{job.id}"
        timeline = [
            _Event(t0, "job_pending", "Fine-tune request created"),
            _Event(t0 + 2 * s, "job_start", "Job started"),
            _Event(t0 + 2 * s, "model_downloading", "Downloading model"),
            _Event(t0 + 2 * s, "model_download_complete", "Model downloaded"),
            _Event(t0 + 2 * s, "training_data_downloading", "Downloading training data"),
            _Event(t0 + 2 * s, "training_data_download_complete", "Training data downloaded"),
            _Event(t0 + 2 * s, "training_start", "Training started"),
        ]
        for step in range(1, RUNNING_STEPS + 1):
            at = t0 + (2 + step) * s
            if step in ckpt_steps:
                timeline.append(_Event(at, "checkpoint_save", f"New checkpoint saved at step {step}", step,
                                       checkpoint_path=f"{base}/checkpoint-{step}"))
        n_epochs = int(job.request.get("n_epochs") or 1)
        for epoch in range(1, n_epochs + 1):
            step = math.ceil(RUNNING_STEPS * epoch / n_epochs)
            timeline.append(_Event(t0 + (2 + step) * s, "epoch_complete", f"Epoch {epoch} completed", step))
        done = t0 + (2 + RUNNING_STEPS) * s
        timeline += [
            _Event(done, "training_complete", "Training completed", RUNNING_STEPS),
            _Event(done, "model_compressing", "Compressing output model", RUNNING_STEPS),
            _Event(done + s, "model_compression_complete", "Model compression complete", RUNNING_STEPS),
            _Event(done + s, "model_uploading", "Uploading output model", RUNNING_STEPS),
            _Event(done + 2 * s, "model_upload_complete", "Model upload complete", RUNNING_STEPS,
                   model_path=f"{base}/output"),
            _Event(done + 2 * s, "job_complete", f"Job finished. Output model: {job.output_name}", RUNNING_STEPS,
                   checkpoint_path=f"{base}/output", model_path=f"{base}/output"),
        ]
        timeline.sort(key=lambda e: e.at)
        now = self.clock()
        frozen = self._frozen_at(job)
        cutoff = min(now, frozen) if frozen is not None else now
        happened = [e for e in timeline if e.at <= cutoff]
        if happened and happened[-1].type == "job_complete":
            return happened
        _, step = self._status(job, now)
        if job.failed_at is not None and job.failed_at == frozen:
            happened.append(_Event(job.failed_at, "job_error", job.failure_message or "Job failed", step, "error"))
        elif job.cancel_requested_at is not None:
            happened.append(_Event(job.cancel_requested_at, "cancel_requested", "Cancel requested", step))
            if now - job.cancel_requested_at >= s:
                happened.append(_Event(job.cancel_requested_at + s, "job_stopped", "Job cancelled", step))
        return happened

    def _event_wire(self, job: EmulatedJob, event: _Event) -> dict[str, Any]:
        return {
            "object": "fine-tune-event", "created_at": _iso(event.at), "level": event.level,
            "message": event.message, "type": event.type, "param_count": _param_count(job.request["model"]),
            "token_count": job.token_count, "total_steps": RUNNING_STEPS, "wandb_url": "", "step": event.step,
            "checkpoint_path": event.checkpoint_path, "model_path": event.model_path, "training_offset": 0,
            "hash": hashlib.sha256(f"{job.id}/{event.type}/{event.at}".encode()).hexdigest()[:16],
        }

    def _job_wire(self, job: EmulatedJob, *, truncated: bool) -> dict[str, Any]:
        now = self.clock()
        status, step = self._status(job, now)
        events = self._events(job)
        r = job.request
        n_epochs = int(r.get("n_epochs") or 1)
        updated = max(e.at for e in events)
        started = next((e.at for e in events if e.type == "job_start"), None)
        wire: dict[str, Any] = {
            "id": job.id, "status": status, "created_at": _iso(job.created_at), "updated_at": _iso(updated),
            "user_id": NAMESPACE, "owner_address": f"{NAMESPACE}@example.com",
            "model": r["model"], "training_file": r["training_file"], "validation_file": r["validation_file"],
            "n_epochs": n_epochs, "n_checkpoints": int(r.get("n_checkpoints") or 1),
            "n_evals": int(r.get("n_evals") or 0), "batch_size": r["batch_size"],
            "learning_rate": r.get("learning_rate", 1e-5), "warmup_ratio": r.get("warmup_ratio", 0.0),
            "max_grad_norm": r.get("max_grad_norm", 1.0), "weight_decay": r.get("weight_decay", 0.0),
            "packing": r.get("packing", True), "training_type": r["training_type"],
            "training_method": r["training_method"], "random_seed": r["random_seed"],
            "token_count": job.token_count, "param_count": _param_count(r["model"]),
            "total_price": math.ceil(job.token_count * 0.48e-6 * 100), "events": [],
            "epochs_completed": n_epochs * step // RUNNING_STEPS, "steps_completed": step,
            "total_steps": RUNNING_STEPS, "evals_completed": 0,
            "queue_depth": 1 if status in ("pending", "queued") else 0,
            "trainingfile_numlines": job.train_lines, "trainingfile_size": job.train_bytes,
            "progress": {"estimate_available": status not in FINISHED_STATUSES,
                         "seconds_remaining": 0 if status in FINISHED_STATUSES
                         else max(0, math.ceil(job.created_at + (4 + RUNNING_STEPS) * self.step_seconds - now))},
        }
        for key in ("lr_scheduler", "suffix", "max_seq_length", "wandb_project_name", "wandb_name"):
            if r.get(key) is not None:
                wire[key] = r[key]
        if started is not None:
            wire["started_at"] = _iso(started)
        if status == "completed":
            wire["model_output_name"] = job.output_name
            wire["model_output_path"] = f"s3://together-emulator/finetune/{job.id}/output"
            if r["training_type"]["type"] == "Lora":
                wire["adapter_output_name"] = f"{job.output_name}-adapter"
        if not truncated:
            wire["job_id"] = job.id
            wire["events"] = [self._event_wire(job, e) for e in events]
            wire["eval_steps"] = 0
        return wire

    # ---------------------------------------------------------------- inference

    def _completed_job_for(self, model: str) -> EmulatedJob | None:
        for job in list(self.jobs.values()):
            if job.output_name == model and self._status(job)[0] == "completed":
                return job
        return None

    def _model_missing(self, model: Any) -> Response:
        return error_response(
            404, f"Unable to access model {model}. Please visit https://api.together.ai/models to view the "
            "list of supported models.", code="model_not_available",
        )

    async def chat_completions(self, request: Request) -> Response:
        body = request.json()
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error_response(400, "`messages` must be a non-empty list", param="messages")
        job = self._completed_job_for(model) if isinstance(model, str) else None
        if job is None and model not in CHAT_MODELS:
            return self._model_missing(model)
        question = " ".join(
            str(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"
        ).strip()
        answer = (job.responder.answer(messages) if job else None) or (
            f"Together emulator base model reply to: {question}"
        )
        pieces = re.findall(r"\S+\s*", answer)
        finish = "stop"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
            pieces, finish = pieces[:max_tokens], "length"
        prompt_tokens = sum(len(tokens(str(m.get("content", "")))) for m in messages if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        completion_id = f"emu-{uuid.uuid4().hex[:16]}"
        created = int(self.clock())
        if not body.get("stream"):
            return json_response({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "prompt": [], "choices": [{
                    "index": 0, "finish_reason": finish,
                    "message": {"role": "assistant", "content": "".join(pieces), "tool_calls": []},
                }], "usage": usage,
            })

        async def sse() -> AsyncIterator[bytes]:
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                chunk = {
                    "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "text": piece, "logprobs": None, "seed": None,
                                 "finish_reason": finish if last else None,
                                 "delta": {"token_id": i, "role": "assistant", "content": piece}}],
                    # Together sends usage on the finishing chunk without needing stream_options.
                    "usage": usage if last else None,
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return Response(200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
                        stream=sse())

    async def embeddings(self, request: Request) -> Response:
        body = request.json()
        model, inputs = body.get("model"), body.get("input")
        if model not in EMBEDDING_MODELS:
            return self._model_missing(model)
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return error_response(400, "`input` must be a string or a non-empty list of strings", param="input")
        return json_response({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": hashed_embedding(text)}
                     for i, text in enumerate(inputs)],
        })


def create_together_emulator(*, api_key: str = DEFAULT_API_KEY, step_seconds: float = 0.2) -> TogetherEmulator:
    return TogetherEmulator(api_key=api_key, step_seconds=step_seconds)

