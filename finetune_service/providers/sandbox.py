"""The Sandbox provider: the whole fine-tuning loop offline, with no account.

A job "trains" a nearest-neighbour responder over its training file (see
`sandbox_engine`), walks through realistic statuses on the wall clock, reports real
metrics (exact match on the validation file) and then serves chat completions. State
lives in small JSON files under the data folder, so jobs survive a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finetune_service.atomic_files import atomic_write_bytes
from finetune_service.errors import ProviderError
from finetune_service.providers.base import (
    BaseModelInfo,
    CreateJobRequest,
    GeneratedImage,
    ImageRequest,
    JobStatus,
    ProviderCheckpoint,
    ProviderEvent,
    ProviderFile,
    ProviderJob,
    ProviderName,
)
from finetune_service.providers.parameters import ParamSpec
from finetune_service.providers.sandbox_engine import (
    RUNNING_STEPS,
    NearestNeighbourResponder,
    best_match,
    hashed_embedding,
    parse_jsonl,
    simulated_loss,
    timeline_at,
    tokens,
)

MODELS = (
    BaseModelInfo(id="sandbox-chat-small", name="Sandbox chat (small, offline)", context_length=4096),
    BaseModelInfo(id="sandbox-chat-large", name="Sandbox chat (large, offline)", context_length=8192,
                  training_methods=("sft", "dpo")),
)
FINE_TUNED_PREFIX = "sandbox-ft:"
IMAGE_MODEL = "sandbox-image"
IMAGE_SIDE = (64, 2048)

PARAMETERS = (
    ParamSpec("n_epochs", "integer", "Passes over the training data (the sandbox records it).", 1, 1, 20),
    ParamSpec("learning_rate", "number", "Learning rate (recorded; the sandbox is not gradient based).",
              1e-5, 0, 1, exclusive_minimum=True),
    ParamSpec("batch_size", "integer", "Examples per step (recorded).", 8, 1, 256),
    ParamSpec("suffix", "string", "Text added to the fine-tuned model name (<= 40 characters)."),
    ParamSpec("training_method", "enum", "Supervised fine-tuning or preference tuning.", "sft",
              choices=("sft", "dpo")),
    ParamSpec("fail_with", "string", "Make the job fail with this message (for testing failure handling)."),
)


@dataclass
class _JobRecord:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    parameters: dict[str, Any]
    client_reference: str
    suffix: str | None
    created: float
    cancelled: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _tool_call(body: dict[str, Any], question: str) -> dict[str, Any] | None:
    """The call the Sandbox makes when `tools` are offered: the function the user message names
    (by name, or with spaces for underscores), or the one `tool_choice` forces. Arguments are
    taken from `name=value` / `name: value` in the message, and from enum values it mentions."""
    tools = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    functions = [f for f in tools if isinstance(f, dict) and isinstance(f.get("name"), str) and f["name"]]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    lowered = question.lower()
    chosen = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        chosen = next((f for f in functions if f["name"] == choice["function"].get("name")), None)
    if chosen is None:
        for function in functions:
            name = function["name"].lower()
            if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", lowered) or (
                    "_" in name and name.replace("_", " ") in lowered):
                chosen = function
                break
    if chosen is None and choice == "required":
        chosen = functions[0]
    if chosen is None:
        return None
    properties = (chosen.get("parameters") or {}).get("properties") or {}
    arguments: dict[str, Any] = {}
    for param, schema in properties.items() if isinstance(properties, dict) else ():
        match = re.search(rf"(?<!\w){re.escape(param)}\s*[=:]\s*(\"[^\"]*\"|'[^']*'|[^,;\s]+)", question,
                          re.IGNORECASE)
        if match:
            value: Any = match.group(1).strip("\"'")
            kind = schema.get("type") if isinstance(schema, dict) else None
            if kind in ("integer", "number"):
                try:
                    value = int(value) if kind == "integer" else float(value)
                except ValueError:
                    continue
            elif kind == "boolean":
                value = value.lower() in ("true", "yes", "1")
            arguments[param] = value
        elif isinstance(schema, dict) and isinstance(schema.get("enum"), list):
            mentioned = [v for v in schema["enum"] if isinstance(v, str) and v.lower() in lowered]
            if mentioned:
                arguments[param] = mentioned[0]
    return {"id": f"call_{secrets.token_hex(8)}", "type": "function",
            "function": {"name": chosen["name"], "arguments": json.dumps(arguments)}}


def _last_user(messages: Sequence[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class SandboxProvider:
    name = ProviderName.SANDBOX
    display_name = "Sandbox (offline)"

    def __init__(self, root: Path, *, step_seconds: float = 2.0) -> None:
        self._root = root
        self._step = step_seconds
        self._responders: dict[str, NearestNeighbourResponder] = {}

    @property
    def configured(self) -> bool:
        return True

    def parameter_specs(self) -> Sequence[ParamSpec]:
        return PARAMETERS

    def static_models(self) -> Sequence[BaseModelInfo]:
        return MODELS

    async def list_models(self) -> list[BaseModelInfo]:
        return list(MODELS)

    # -- files -------------------------------------------------------------------------
    def _file_path(self, file_id: str) -> Path:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise ProviderError(f"Sandbox file {file_id!r} does not exist", provider=self.name, status=404)
        return self._root / "files" / f"{file_id}.jsonl"

    async def upload_file(self, path: Path, filename: str) -> ProviderFile:
        data = await asyncio.to_thread(path.read_bytes)
        file_id = f"file-{secrets.token_hex(12)}"
        await asyncio.to_thread(atomic_write_bytes, self._file_path(file_id), data)
        return ProviderFile(id=file_id, filename=filename, bytes=len(data))

    # -- jobs --------------------------------------------------------------------------
    def _job_path(self, job_id: str) -> Path:
        if not job_id.startswith("sft-") or not job_id[4:].isalnum():
            raise ProviderError(f"Sandbox job {job_id!r} does not exist", provider=self.name, status=404)
        return self._root / "jobs" / f"{job_id}.json"

    def _load(self, job_id: str) -> _JobRecord:
        # Called on the event loop: a record is a few hundred bytes in the page cache, cheaper to
        # read than a thread hop, and each sync of a job read it three times.
        path = self._job_path(job_id)
        if not path.exists():
            raise ProviderError(f"Sandbox job {job_id!r} does not exist", provider=self.name, status=404)
        return _JobRecord(**json.loads(path.read_bytes()))

    def _save(self, record: _JobRecord) -> None:
        atomic_write_bytes(self._job_path(record.id), record.to_json())

    async def create_job(self, request: CreateJobRequest) -> ProviderJob:
        if request.model not in {m.id for m in MODELS}:
            raise ProviderError(
                f"Sandbox has no base model {request.model!r}; use one of "
                + ", ".join(m.id for m in MODELS), provider=self.name, status=422)
        for file_id in filter(None, (request.training_file_id, request.validation_file_id)):
            if not self._file_path(file_id).exists():
                raise ProviderError(f"Sandbox file {file_id!r} does not exist", provider=self.name, status=404)
        existing = await self.find_job(request.client_reference)
        if existing is not None:
            return existing
        record = _JobRecord(
            id=f"sft-{secrets.token_hex(10)}", model=request.model, training_file=request.training_file_id,
            validation_file=request.validation_file_id, parameters=request.parameters,
            client_reference=request.client_reference, suffix=request.suffix, created=time.time(),
        )
        await asyncio.to_thread(self._save, record)
        return await self.get_job(record.id)

    async def find_job(self, client_reference: str) -> ProviderJob | None:
        folder = self._root / "jobs"
        if not folder.exists():
            return None
        for path in folder.glob("sft-*.json"):
            data = json.loads(path.read_bytes())
            if data.get("client_reference") == client_reference:
                return await self.get_job(data["id"])
        return None

    def _fine_tuned_name(self, record: _JobRecord) -> str:
        suffix = f"{record.suffix}:" if record.suffix else ""
        return f"{FINE_TUNED_PREFIX}{record.model}:{suffix}{record.id}"

    def _state(self, record: _JobRecord, now: float) -> tuple[str, float, int]:
        until = record.cancelled if record.cancelled is not None else now
        point = timeline_at(until - record.created, self._step)
        if record.cancelled is not None and point.stage != "succeeded":
            return "cancelled", point.progress, point.step
        if point.stage == "running" or point.stage == "succeeded":
            failure = record.parameters.get("fail_with")
            if failure:
                return "failed", point.progress, point.step
        return point.stage, point.progress, point.step

    def _train(self, record: _JobRecord) -> tuple[NearestNeighbourResponder, dict[str, Any]]:
        training = parse_jsonl(self._file_path(record.training_file).read_bytes())
        responder = NearestNeighbourResponder.train(training)
        metrics: dict[str, Any] = {
            "train_loss": simulated_loss(RUNNING_STEPS), "train_examples": len(responder.prompts),
        }
        if record.validation_file:
            score = responder.exact_match(parse_jsonl(self._file_path(record.validation_file).read_bytes()))
            if score is not None:
                metrics["validation_exact_match"] = round(score, 4)
        return responder, metrics

    async def get_job(self, job_id: str) -> ProviderJob:
        record = self._load(job_id)
        stage, progress, step = self._state(record, time.time())
        status = {
            "validating": JobStatus.VALIDATING, "queued": JobStatus.QUEUED, "running": JobStatus.RUNNING,
            "succeeded": JobStatus.SUCCEEDED, "failed": JobStatus.FAILED, "cancelled": JobStatus.CANCELLED,
        }[stage]
        metrics: dict[str, Any] = {"train_loss": simulated_loss(step)} if step else {}
        error = None
        fine_tuned = None
        finished = None
        if status is JobStatus.SUCCEEDED:
            responder, metrics = await asyncio.to_thread(self._train, record)
            if not responder.prompts:
                status, stage = JobStatus.FAILED, "failed"
                error = "The training file has no usable example (no assistant answer in any line)."
            else:
                fine_tuned = self._fine_tuned_name(record)
                self._responders[fine_tuned] = responder
            finished = record.created + self._step * (2 + RUNNING_STEPS)
        elif status is JobStatus.FAILED:
            error = str(record.parameters["fail_with"])
            finished = time.time()
        elif status is JobStatus.CANCELLED:
            finished = record.cancelled
        return ProviderJob(
            id=record.id, status=status, raw_status=stage, model=record.model, fine_tuned_model=fine_tuned,
            progress=progress if status is not JobStatus.SUCCEEDED else 100.0, metrics=metrics, error=error,
            created_at=_dt(record.created),
            started_at=_dt(record.created + 2 * self._step) if step or status.finished else None,
            finished_at=_dt(finished) if finished else None,
        )

    async def cancel_job(self, job_id: str) -> ProviderJob:
        record = self._load(job_id)
        job = await self.get_job(job_id)
        if not job.status.finished:
            record.cancelled = time.time()
            await asyncio.to_thread(self._save, record)
        return await self.get_job(job_id)

    async def list_events(self, job_id: str) -> list[ProviderEvent]:
        record = self._load(job_id)
        job = await self.get_job(job_id)
        created = record.created
        events = [ProviderEvent(id=f"{job_id}-0", created_at=_dt(created), message="Validating training file",
                                type="validating")]
        _, _, steps = self._state(record, time.time())
        if job.status.rank >= JobStatus.QUEUED.rank:
            events.append(ProviderEvent(id=f"{job_id}-1", created_at=_dt(created + self._step),
                                        message="Job queued", type="queued"))
        if job.started_at:
            events.append(ProviderEvent(id=f"{job_id}-2", created_at=job.started_at, message="Training started",
                                        type="running"))
        for step in range(1, steps + 1):
            events.append(ProviderEvent(
                id=f"{job_id}-s{step}", created_at=_dt(created + self._step * (2 + step)),
                message=f"Step {step}/{RUNNING_STEPS}: train loss {simulated_loss(step)}", type="metrics"))
        if job.status.finished:
            level = "error" if job.status is JobStatus.FAILED else "info"
            message = {JobStatus.SUCCEEDED: f"Fine-tuned model {job.fine_tuned_model} is ready",
                       JobStatus.FAILED: f"Job failed: {job.error}",
                       JobStatus.CANCELLED: "Job cancelled"}[job.status]
            events.append(ProviderEvent(id=f"{job_id}-end", created_at=job.finished_at or _dt(created),
                                        message=message, level=level, type=job.status.value))
        return events

    async def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        job = await self.get_job(job_id)
        if job.status is not JobStatus.SUCCEEDED:
            return []
        return [ProviderCheckpoint(id=f"{job_id}-final", step=RUNNING_STEPS, created_at=job.finished_at,
                                   model=job.fine_tuned_model, metrics=job.metrics)]

    # -- inference ---------------------------------------------------------------------
    async def _responder_for(self, model: str) -> NearestNeighbourResponder | None:
        if not model.startswith(FINE_TUNED_PREFIX):
            return None
        if model not in self._responders:
            job_id = model.rsplit(":", 1)[-1]
            job = await self.get_job(job_id)
            if job.fine_tuned_model != model:
                raise ProviderError(f"Sandbox model {model!r} is not ready (job is {job.status.value})",
                                    provider=self.name, status=404)
        return self._responders[model]

    async def _reply(self, body: dict[str, Any]) -> str:
        model = str(body.get("model", ""))
        messages = body.get("messages") or []
        if model not in {m.id for m in MODELS} and not model.startswith(FINE_TUNED_PREFIX):
            raise ProviderError(f"Sandbox has no model {model!r}", provider=self.name, status=404)
        responder = await self._responder_for(model)
        if responder is not None:
            return responder.answer(messages) or ""
        question = _last_user(messages)
        context = [m.get("content", "") for m in messages if m.get("role") == "system"]
        passages = [p for text in context if isinstance(text, str) for p in text.split("\n\n") if p.strip()]
        if passages:
            index = best_match(question, passages)
            if index is not None:
                return passages[index].strip()
        return f"[sandbox] You said: {question}"

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        messages = body.get("messages") or []
        answered = bool(messages) and messages[-1].get("role") == "tool"  # a tool result came back: answer it
        call = None if answered else _tool_call(body, _last_user(messages))
        if call is not None:
            return self._tool_completion(body, call)
        prompt_tokens = sum(len(tokens(str(m.get("content", "")))) for m in body.get("messages") or [])
        completion_tokens = len(tokens(content))
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and completion_tokens > max_tokens:
            words = content.split(" ")[:max_tokens]
            content, completion_tokens, finish = " ".join(words), len(words), "length"
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _tool_completion(self, body: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        prompt_tokens = sum(len(tokens(str(m.get("content", "")))) for m in body.get("messages") or [])
        completion_tokens = len(tokens(call["function"]["name"] + " " + call["function"]["arguments"]))
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                         "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._completion(body, await self._reply(body))

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        completion = self._completion(body, await self._reply(body))
        return self._chunks(completion)

    async def _chunks(self, completion: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
                "model": completion["model"]}
        message = completion["choices"][0]["message"]
        if message.get("tool_calls"):
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [
                {"index": i, **call} for i, call in enumerate(message["tool_calls"])]}, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                   "usage": completion["usage"]}
            return
        text = message["content"]
        pieces = [p + " " for p in text.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
        for piece in pieces:
            await asyncio.sleep(0)
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        finish = completion["choices"][0]["finish_reason"]
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": completion["usage"]}

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": hashed_embedding(str(t))}
                for i, t in enumerate(texts)]
        used = sum(len(tokens(str(t))) for t in texts)
        return {"object": "list", "model": body.get("model"), "data": data,
                "usage": {"prompt_tokens": used, "total_tokens": used}}

    # -- images ------------------------------------------------------------------------
    async def generate_image(self, request: ImageRequest) -> list[GeneratedImage]:
        """Deterministic PNGs drawn from the prompt with Pillow, labelled as sandbox images."""
        if request.model != IMAGE_MODEL:
            raise ProviderError(f"Sandbox has no image model {request.model!r}; use {IMAGE_MODEL}",
                                provider=self.name, status=404)
        low, high = IMAGE_SIDE
        if not (low <= request.width <= high and low <= request.height <= high):
            raise ProviderError(f"Sandbox images are {low} to {high} pixels a side, got "
                                f"{request.width}x{request.height}", provider=self.name, status=422)
        return [await asyncio.to_thread(draw_sandbox_image, request.prompt, request.width, request.height, index)
                for index in range(request.n)]

    async def aclose(self) -> None:
        return None


def draw_sandbox_image(prompt: str, width: int, height: int, index: int = 0) -> GeneratedImage:
    """Same prompt, size and index -> the same PNG bytes. Colours and shapes come from a hash of
    the prompt; a banner and the PNG's text chunks say it is a sandbox image."""
    from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

    seed = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    image = Image.new("RGB", (width, height), (seed[0], seed[1], seed[2]))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        a, b, c, d = (seed[3 + 4 * i + k] for k in range(4))
        box = (a * width // 256, b * height // 256, (a + c) * width // 256, (b + d) * height // 256)
        colour = (seed[(i * 3) % 32], seed[(i * 3 + 1) % 32], seed[(i * 3 + 2) % 32])
        (draw.ellipse if i % 2 else draw.rectangle)(
            (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])), fill=colour)
    size = max(10, min(width, height) // 20)
    font = ImageFont.load_default(size=size)
    banner = size * 2
    draw.rectangle((0, 0, width, banner), fill=(0, 0, 0))
    draw.text((size // 2, size // 2), "SANDBOX IMAGE - not a real model", fill=(255, 255, 0), font=font)
    words, lines, line = prompt.split(), [], ""
    per_line = max(8, width // max(1, size * 6 // 10))
    for word in words:
        if line and len(line) + 1 + len(word) > per_line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    y = banner + size // 2
    for text in lines[: max(1, (height - banner) // (size + 4) - 1)]:
        draw.text((size // 2, y), text, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        y += size + 4
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "finetune-service sandbox")
    info.add_text("Comment", "Sandbox image: drawn offline from the prompt, not by an image model.")
    info.add_text("Description", prompt[:2000])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=False)
    return GeneratedImage(data=buffer.getvalue(), media_type="image/png")
