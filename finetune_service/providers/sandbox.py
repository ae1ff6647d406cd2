"""The Sandbox provider: the whole fine-tuning loop offline, with no account.

A job "trains" a nearest-neighbour responder over its training file (see
`sandbox_engine`), walks through realistic statuses on the wall clock, reports real
metrics (exact match on the validation file) and then serves chat completions. State
lives in small JSON files under the data folder, so jobs survive a restart.
"""

from __future__ import annotations

import asyncio
import json
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
        record = await asyncio.to_thread(self._load, job_id)
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
        record = await asyncio.to_thread(self._load, job_id)
        job = await self.get_job(job_id)
        if not job.status.finished:
            record.cancelled = time.time()
            await asyncio.to_thread(self._save, record)
        return await self.get_job(job_id)

    async def list_events(self, job_id: str) -> list[ProviderEvent]:
        record = await asyncio.to_thread(self._load, job_id)
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

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._completion(body, await self._reply(body))

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        completion = self._completion(body, await self._reply(body))
        return self._chunks(completion)

    async def _chunks(self, completion: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
                "model": completion["model"]}
        text = completion["choices"][0]["message"]["content"]
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

    async def aclose(self) -> None:
        return None
