"""RobinApi (`robin-api` 2.24 client) on top of the existing services.

Nothing here is a second implementation: completions, grounded answers, datasets, jobs and
evaluations are the native services; this module maps the client's wire format onto them and
keeps what only the client knows (task, Trainer-style params, input template, target column)
in `robin_fine_tunings`, one row per job.

* A fine-tune trains on every row of the uploaded data set (`split_name="all"`); each user turn
  is `paramsInput.input_template` rendered over the row (the datasets service's
  `user_message_template`), the assistant turn is the `paramsOutput` column (the label for
  `classification-text`).
* Trainer-style `params` become the provider's own parameters where the provider has one of the
  same meaning (`TRAINER_PARAMETERS`); the rest stay on the record, listed as not applied.
* `progress` comes from the job's state after one sync with its provider; `testings` are the
  job's evaluation runs.
* Files sent to `upload-file` wait (per tenant, under `<data dir>/robin-uploads`, 24 h) until a
  `folders` call indexes them into a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlmodel import col

from dataset_formats.system_message import parse_template
from finetune_service.atomic_files import atomic_write_bytes
from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.tables import Dataset, Evaluation, Job, RobinFineTuning
from finetune_service.errors import NotFound, PayloadTooLarge, ProviderError, ValidationFailed
from finetune_service.providers.base import FineTuneProvider, JobStatus
from finetune_service.schemas.completions import ChatCompletionRequest, JobTestBody, StreamOptions
from finetune_service.schemas.evaluations import CreateEvaluationBody
from finetune_service.schemas.jobs import CreateJobBody
from finetune_service.schemas.retrieval import AnswerRequest, Message, UploadResult
from finetune_service.schemas.robin import (
    DataMedia,
    FileTestResult,
    FineTuningItem,
    FolderAnswer,
    GetResponseBody,
    MediaRecord,
    RobinFile,
    RobinFolder,
    StartFineTuningBody,
    Testing,
    TestRow,
    UploadedFile,
)
from finetune_service.services.catalog import Catalog
from finetune_service.services.datasets import DatasetsService, clean_filename, dataset_errors
from finetune_service.services.evaluations import EvaluationsService
from finetune_service.services.jobs import JobsService
from finetune_service.services.openai_facade import resolve_model
from finetune_service.services.retrieval import RetrievalService

TASKS = ("language-modeling", "classification-text")
IMAGE_TASK = "text-to-images"
# Trainer argument -> the provider parameters of the same meaning (the first the provider has wins).
TRAINER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "num_train_epochs": ("n_epochs", "epochs"),
    "learning_rate": ("learning_rate", "learningRate"),
    "per_device_train_batch_size": ("batch_size", "batchSizeSamples"),
    "warmup_ratio": ("warmup_ratio",),
    "warmup_steps": ("learningRateWarmupSteps",),
    "lr_scheduler_type": ("lr_scheduler_type",),
    "max_grad_norm": ("max_grad_norm",),
    "weight_decay": ("weight_decay", "optimizerWeightDecay"),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", "gradientAccumulationSteps"),
    "seed": ("random_seed", "seed"),
}
_DATASET_ID = re.compile(r"ds_[0-9a-f]{24}")
_UPLOAD_ID = re.compile(r"^rf_[0-9a-f]{24}$")
UPLOAD_TTL_SECONDS = 24 * 3600
MAX_STASHED_BYTES = 50 * 1024 * 1024
FILE_TEST_WAIT_SECONDS = 120.0
MAX_RESULT_ROWS = 1000
EVENT = b"event: update\ndata: "
DONE_EVENT = b"event: update\ndata: DONE\n\n"


# ---------------------------------------------------------------------------------- completions


def conversation_messages(conversation: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    """The client's `conversation`: a list of {role, content}, or (some helpers) one string."""
    if isinstance(conversation, str):
        return [{"role": "user", "content": conversation}]
    return [dict(m) for m in conversation]


def chat_request(body: GetResponseBody) -> ChatCompletionRequest:
    stream = bool(body.stream)
    return ChatCompletionRequest(
        model=body.model, messages=conversation_messages(body.conversation), max_tokens=body.max_new_tokens,
        temperature=body.temperature, tools=body.tools or None, stream=stream or None,
        stream_options=StreamOptions(include_usage=True) if stream else None,
        save_response=bool(body.save_response),
    )


def answer_request(body: GetResponseBody) -> AnswerRequest:
    messages = []
    for index, message in enumerate(conversation_messages(body.conversation)):
        content, role = message.get("content"), message.get("role")
        if not isinstance(content, str) or not isinstance(role, str):
            raise ValidationFailed(f"'conversation[{index}]' must be {{role, content}} with text content.",
                                   param=f"conversation[{index}]")
        messages.append(Message(role=role, content=content))
    defaults = AnswerRequest()
    return AnswerRequest(
        folder_id=body.folder_id, conversation=messages, collection_name=body.collection_name, model=body.model,
        max_new_tokens=body.max_new_tokens or defaults.max_new_tokens, temperature=body.temperature,
        top=body.top or defaults.top,
        similarity_threshold=(body.similarity_threshold if body.similarity_threshold is not None
                              else defaults.similarity_threshold),
        only_with_context=bool(body.only_with_context), stream=bool(body.stream),
    )


def completion_answer(result: dict[str, Any]) -> dict[str, Any]:
    """A chat completion the client's pydantic model accepts: a known `finish_reason`, `usage` present."""
    for choice in result.get("choices") or []:
        if choice.get("finish_reason") not in ("stop", "length", "tool_calls", "content_filter", "function_call"):
            choice["finish_reason"] = "tool_calls" if (choice.get("message") or {}).get("tool_calls") else "stop"
    result.setdefault("usage", None)
    result.setdefault("object", "chat.completion")
    return result


async def robin_events(events: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    """Our OpenAI-style SSE (`data: {...}`, keep-alives, `[DONE]`) as the client's stream: every event
    `event: update\\ndata: <json>\\n\\n`, content chunks, one metrics event with `details`, then
    `event: update\\ndata: DONE\\n\\n` (the client only handles an event once the next one arrives)."""
    buffer = b""
    finish, usage, error, sources = "stop", None, None, None
    details: dict[str, Any] = {}
    head: dict[str, Any] = {"id": "", "created": int(time.time())}
    async for raw in events:
        buffer += raw
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            data = b"".join(line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:"))
            if not data or data == b"[DONE]":
                continue  # keep-alive comments and the end marker
            event = json.loads(data)
            if "error" in event:
                error = event["error"]
                continue
            if event.get("object") == "retrieval.sources":
                sources = event.get("sources")
                continue
            head = {"id": event.get("id") or head["id"], "created": event.get("created") or head["created"]}
            usage = event.get("usage") or usage
            details = event.get("details") or details
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                delta = {k: v for k, v in (choice.get("delta") or {}).items()
                         if k in ("role", "content", "tool_calls") and v is not None}
                if delta.get("content") or delta.get("tool_calls") or delta.get("role"):
                    chunk = {**head, "object": "chat.completion.chunk", "model": model,
                             "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}]}
                    yield EVENT + json.dumps(chunk).encode() + b"\n\n"
    generated = (usage or {}).get("completion_tokens", details.get("completion_tokens")) or 0
    final: dict[str, Any] = {
        **head, "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": finish}],
        "details": {
            "cost": 0.0, "tokens_generated": int(generated),
            "tokens_input": int((usage or {}).get("prompt_tokens") or 0),
            **{k: v for k, v in details.items() if k != "completion_tokens"},
        },
    }
    if sources is not None:
        final["sources"] = sources
    if error is not None:
        final["error"] = error
    yield EVENT + json.dumps(final).encode() + b"\n\n"
    yield DONE_EVENT


# ---------------------------------------------------------------------------------- folders


def folder_answer(result: UploadResult, base_url: str) -> FolderAnswer:
    document = result.document
    status_url = f"{base_url}/api/retrieval/folders/{result.folder.api_folder_id}/documents/{document.id}"
    return FolderAnswer(
        folder=RobinFolder(api_folder_id=result.folder.api_folder_id, created_at=result.folder.created_at),
        file=RobinFile(url=result.file.url or status_url, tokens=result.file.tokens,
                       document_id=result.file.document_id, created_at=result.file.created_at),
        file_id=result.file_id, document=msgspec.to_builtins(document),
    )


# ---------------------------------------------------------------------------------- fine-tuning


def trainer_parameters(provider: FineTuneProvider, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the provider's parameters, the Trainer arguments it has no counterpart for)."""
    names = {spec.name: spec for spec in provider.parameter_specs()}
    applied: dict[str, Any] = {}
    not_applied: list[str] = []
    for name, value in params.items():
        target = next((t for t in TRAINER_PARAMETERS.get(name, ()) if t in names), None)
        if target is None:
            not_applied.append(name)
            continue
        if names[target].type == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        applied[target] = value
    return applied, sorted(not_applied)


def progress_of(job: Job) -> int:
    status = JobStatus(job.status)
    if status is JobStatus.SUCCEEDED:
        return 100
    value = int(job.progress or 0)
    return max(0, min(value, 100 if status.finished else 99))


def testing_view(evaluation: Evaluation, task: str) -> Testing:
    tuned = (evaluation.metrics or {}).get("fine_tuned") or {}
    return Testing(
        id=evaluation.id, status=evaluation.status, dataset_id=evaluation.dataset_id, total=evaluation.total,
        done=evaluation.done, failed=evaluation.failed,
        accuracy=tuned.get("exact_match") if task == "classification-text" else None,
        metrics=dict(evaluation.metrics or {}), error=evaluation.error, created_at=evaluation.created_at,
        finished_at=evaluation.finished_at,
    )


def media_record(dataset: Dataset, base_url: str, *, source: str | None, sample: str | None) -> MediaRecord:
    return MediaRecord(
        id=dataset.id, name=dataset.filename, description=dataset.description,
        url=f"{base_url}/api/finetune/datasets/{dataset.id}", width=None, height=None, source=source or "DATASET",
        bytes_size=str(dataset.bytes), document_id=None, extension=dataset.file_type, due_at=None,
        created_at=dataset.created_at, parent_entity=None, parent_entity_type=None, type="DATASET", children=[],
        user_tags=[], purpose=dataset.purpose,
        data_media=DataMedia(id=dataset.id, num_rows=dataset.row_count, colums=list(dataset.columns),
                             data=sample or "", description=dataset.description),
    )


@dataclass
class RobinService:
    database: Database
    catalog: Catalog
    datasets: DatasetsService
    jobs: JobsService
    evaluations: EvaluationsService
    retrieval: RetrievalService
    aliases: dict[str, str]
    uploads_dir: Path
    file_test_wait_seconds: float = FILE_TEST_WAIT_SECONDS

    # -- files waiting for a folder ---------------------------------------------------------
    def _upload_dir(self, tenant_id: str, file_id: str | None = None) -> Path:
        root = self.uploads_dir / hashlib.sha256(tenant_id.encode()).hexdigest()[:32]
        return root / file_id if file_id else root

    async def stash(self, principal: Principal, filename: str | None, data: bytes) -> UploadedFile:
        if not data:
            raise ValidationFailed("The uploaded file is empty.", param="file")
        if len(data) > MAX_STASHED_BYTES:
            raise PayloadTooLarge(f"Files up to {MAX_STASHED_BYTES} bytes can be indexed.", param="file")
        name = clean_filename(filename)
        file_id = f"rf_{secrets.token_hex(12)}"
        await asyncio.to_thread(self._sweep, self._upload_dir(principal.tenant_id))
        await asyncio.to_thread(atomic_write_bytes, self._upload_dir(principal.tenant_id, file_id) / name, data)
        return UploadedFile(file_id=file_id, file_name=name, bytes=len(data))

    @staticmethod
    def _sweep(root: Path) -> None:
        cutoff = time.time() - UPLOAD_TTL_SECONDS
        for entry in root.glob("rf_*") if root.exists() else []:
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)

    async def stashed(self, principal: Principal, file_id: str) -> tuple[str, bytes]:
        folder = self._upload_dir(principal.tenant_id, file_id) if _UPLOAD_ID.match(file_id) else None
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")] \
            if folder is not None and folder.is_dir() else []
        if not files:
            raise NotFound(f"File {file_id!r} does not exist (files from upload-file are kept 24 hours).",
                           param="fileId")
        return files[0].name, await asyncio.to_thread(files[0].read_bytes)

    # -- fine-tuning ---------------------------------------------------------------------------
    async def start(self, principal: Principal, body: StartFineTuningBody) -> Job:
        if body.task == IMAGE_TASK:
            raise ValidationFailed(
                "Task 'text-to-images' needs a provider that fine-tunes image models, and none configured here "
                f"does; use one of: {', '.join(TASKS)}.", param="task")
        if body.task not in TASKS:
            raise ValidationFailed(f"'task' must be one of {', '.join((*TASKS, IMAGE_TASK))}; got {body.task!r}.",
                                   param="task")
        template = (body.params_input or {}).get("input_template")
        if not isinstance(template, str) or not template.strip():
            raise ValidationFailed("'paramsInput.input_template' must be a template over the data set's columns, "
                                   "e.g. \"{question}\".", param="paramsInput.input_template")
        if not body.params_output or not body.params_output.strip():
            raise ValidationFailed("'paramsOutput' must name the data set column with the expected answer"
                                   + (" (the label)." if body.task == "classification-text" else "."),
                                   param="paramsOutput")
        provider_name, model_name = resolve_model(body.model, self.aliases)
        applied, not_applied = trainer_parameters(self.catalog.provider(provider_name), body.params)
        create = CreateJobBody(
            name=(body.description or f"robin {body.task}")[:200], provider=provider_name.value,
            model_name=model_name, dataset_path=body.media_id, parameters=applied, description=body.description,
            split_name="all", column_mapping={"assistant": body.params_output}, user_message_template=template,
        )
        job, _ = await self.jobs.create(principal, create)
        async with self.database.session() as session:
            session.add(RobinFineTuning(
                job_id=job.id, tenant_id=principal.tenant_id, model=body.model, task=body.task,
                sub_category=body.sub_category, media_id=body.media_id, description=body.description,
                params=dict(body.params), params_input=dict(body.params_input or {}),
                params_output=body.params_output, extension=body.extension, applied=applied,
                not_applied=not_applied,
            ))
        return job

    async def _record(self, principal: Principal, job_id: str) -> RobinFineTuning:
        async with self.database.session() as session:
            row = await session.get(RobinFineTuning, job_id)
        if row is None or row.tenant_id != principal.tenant_id:
            raise NotFound(f"Fine-tuning {job_id!r} does not exist.", param="fineTuningId")
        return row

    async def _current(self, principal: Principal, job_id: str) -> Job:
        """The job after one sync with its provider (unless it has finished)."""
        job = await self.jobs.get(principal, job_id)
        if not JobStatus(job.status).finished:
            with contextlib.suppress(ProviderError):
                job = await self.jobs.refresh(principal, job_id)
        return job

    async def item(self, principal: Principal, job_id: str, base_url: str) -> FineTuningItem:
        row = await self._record(principal, job_id)
        job = await self._current(principal, job_id)
        evaluations = await self.evaluations.list_for_job(principal, job_id)
        return self._item(row, job, evaluations, base_url)

    async def page(self, principal: Principal, page: int, limit: int, base_url: str
                   ) -> tuple[list[FineTuningItem], int]:
        if page < 1 or not 1 <= limit <= 100:
            raise ValidationFailed("'page' must be at least 1 and 'limit' between 1 and 100.", param="limit")
        owned = col(RobinFineTuning.tenant_id) == principal.tenant_id
        async with self.database.session() as session:
            total = int((await session.execute(select(func.count()).select_from(RobinFineTuning).where(owned)))
                        .scalar_one())
            rows = list((await session.execute(
                select(RobinFineTuning).where(owned)
                .order_by(col(RobinFineTuning.created_at).desc(), col(RobinFineTuning.job_id).desc())
                .limit(limit).offset((page - 1) * limit))).scalars())
        items = []
        for row in rows:
            job = await self._current(principal, row.job_id)
            evaluations = await self.evaluations.list_for_job(principal, row.job_id)
            items.append(self._item(row, job, evaluations, base_url))
        return items, total

    @staticmethod
    def _item(row: RobinFineTuning, job: Job, evaluations: list[Evaluation], base_url: str) -> FineTuningItem:
        return FineTuningItem(
            id=job.id, model=row.model, sub_category=row.sub_category or row.task, description=row.description or "",
            url_dataset=f"{base_url}/api/finetune/datasets/{row.media_id}", url_images=None,
            training_parameters=json.dumps(row.params), params_input=json.dumps(row.params_input),
            progress=progress_of(job), testings=[testing_view(e, row.task) for e in evaluations], task=row.task,
            status=job.status, fine_tuned_model=job.fine_tuned_model, applied_parameters=dict(row.applied),
            not_applied_parameters=list(row.not_applied), error=job.error, created_at=row.created_at,
        )

    async def test(self, principal: Principal, job_id: str, values: dict[str, Any], max_tokens: int | None,
                   temperature: float | None) -> dict[str, Any]:
        """The fine-tuned model's answer to `input_template` rendered over `values`."""
        row = await self._record(principal, job_id)
        if temperature is not None and not 0 <= temperature <= 1:
            raise ValidationFailed(f"'temperature' must be between 0 and 1, got {temperature:g}.", param="temperature")
        cells = {str(k): "" if v is None else str(v) for k, v in values.items()}
        with dataset_errors():
            prompt = parse_template(str(row.params_input.get("input_template", "")), list(cells),
                                    "paramsInput (input_template)").evaluate(cells)
        await self._current(principal, job_id)
        return await self.evaluations.test(principal, job_id, JobTestBody(prompt=prompt, max_tokens=max_tokens,
                                                                          temperature=temperature))

    async def _dataset_ref(self, principal: Principal, link: str) -> str:
        """An uploaded data set's id (or a link naming one); any other http(s) URL is fetched
        server-side (private addresses refused) and uploaded as a new data set."""
        found = _DATASET_ID.findall(link.strip())
        if found:
            return str(found[-1])
        if not link.strip().lower().startswith(("http://", "https://")):
            raise ValidationFailed("'linkDataSet' must be the id of a data set from fine-tuning/upload-data-set, "
                                   "or an http(s) URL of a CSV shaped like the training set.", param="linkDataSet")
        fetched = await self.retrieval.fetch_url(link.strip())
        name = fetched.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if "." not in name:
            name = f"{name or 'data-set'}.csv"

        async def body() -> AsyncIterator[bytes]:
            yield fetched.body

        dataset = await self.datasets.upload(principal, name, body(), description=f"fetched from {fetched.url}",
                                             purpose="test")
        return dataset.id

    async def file_test(self, principal: Principal, job_id: str, link: str) -> FileTestResult:
        """Evaluate the fine-tuned model on a data set shaped like the training set; waits for the run
        (up to `file_test_wait_seconds`) and answers its metrics and rows."""
        row = await self._record(principal, job_id)
        dataset_id = await self._dataset_ref(principal, link)
        await self._current(principal, job_id)
        evaluation = await self.evaluations.create(principal, job_id, CreateEvaluationBody(
            dataset_path=dataset_id, split_name="all", column_mapping={"assistant": row.params_output}))
        deadline = time.monotonic() + self.file_test_wait_seconds
        while evaluation.status in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            evaluation = await self.evaluations.get(principal, job_id, evaluation.id)
        _, lines = await self.evaluations.results(principal, job_id, evaluation.id)
        results: list[TestRow] = []
        async for line in lines:
            if len(results) >= MAX_RESULT_ROWS:
                break
            data = json.loads(line)
            users = [m.get("content") for m in data.get("messages") or [] if m.get("role") == "user"]
            exact = (data.get("scores") or {}).get("exact_match")
            results.append(TestRow(
                row=data["row"], input=str(users[-1]) if users else "", expected=data.get("expected") or "",
                answer=data.get("answer"), correct=None if exact is None else exact == 1.0,
                scores=data.get("scores"), error=data.get("error")))
        return FileTestResult(testing=testing_view(evaluation, row.task), fine_tuning_id=job_id, task=row.task,
                              results=results)
