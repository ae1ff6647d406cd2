"""Try a job's fine-tuned model, and evaluate it (optionally against its base model) on a test set.

An evaluation formats the test rows exactly like the job's training file (the training
output's options, with another `split_name`; or another uploaded dataset with the same format
settings), asks the model for each row's last assistant turn with bounded concurrency
(`asyncio.Semaphore`), and scores the answer against the expected one. It runs as an asyncio
task held by the service; its row records progress (`done`/`total`), and scored rows are
written in small batches so they can be downloaded as JSONL while the run goes on.

Metrics (each a mean over the rows the model answered; 0..1):

* `exact_match` — 1 when answer and expected are equal after collapsing runs of whitespace and
  trimming the ends (case-sensitive), else 0;
* `token_f1` — SQuAD-style F1 over lower-cased word tokens (`\\w+`, Unicode): harmonic mean of
  the share of answer tokens found in the expected answer and of expected tokens found in the
  answer (1 when both are empty);
* `similarity` — `difflib.SequenceMatcher(autojunk=False).ratio()` of the two lower-cased,
  whitespace-collapsed texts, i.e. 2·matched characters / total characters (first 4,000
  characters of each).

Limits: a service that stops cancels its running evaluations and marks them failed; a crash
leaves them `running` (nothing resumes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Select, select, update
from sqlmodel import col

from finetune_service.auth import Principal
from finetune_service.background import BackgroundTasks
from finetune_service.db.engine import Database
from finetune_service.db.tables import Evaluation, EvaluationResult, Job, utcnow
from finetune_service.errors import Conflict, DomainError, NotFound, ValidationFailed
from finetune_service.providers.sandbox_engine import example_from_line
from finetune_service.schemas.completions import ChatCompletionRequest, JobTestBody
from finetune_service.schemas.datasets import FormatRequest
from finetune_service.schemas.evaluations import CreateEvaluationBody, EvaluationView
from finetune_service.services.completions import (
    MAX_TOKENS_LIMIT,
    CompletionsService,
    Route,
    upstream_body,
    validate_chat,
)
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.jobs import JobsService

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 32
MAX_ROWS = 100_000
SIMILARITY_MAX_CHARS = 4000
_WORD = re.compile(r"\w+", re.UNICODE)
# The format settings that carry over when evaluating on another uploaded dataset.
_FORMAT_FIELDS = ("format_type", "data_strategy", "system_message", "system_message_template",
                  "use_system_column", "thinking_instructions", "user_message_template")
_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------------------------- metrics


def _collapse(text: str) -> str:
    return " ".join(text.split())


def exact_match(answer: str, expected: str) -> float:
    return 1.0 if _collapse(answer) == _collapse(expected) else 0.0


def token_f1(answer: str, expected: str) -> float:
    got, want = _WORD.findall(answer.lower()), _WORD.findall(expected.lower())
    if not got and not want:
        return 1.0
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)


def similarity(answer: str, expected: str) -> float:
    a = _collapse(answer).lower()[:SIMILARITY_MAX_CHARS]
    b = _collapse(expected).lower()[:SIMILARITY_MAX_CHARS]
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def scores(answer: str, expected: str) -> dict[str, float]:
    return {"exact_match": exact_match(answer, expected), "token_f1": round(token_f1(answer, expected), 6),
            "similarity": round(similarity(answer, expected), 6)}


METRICS = ("exact_match", "token_f1", "similarity")
UNFINISHED = ("queued", "running")
STALE_BEATS = 4
INTERRUPTED = "The service stopped before the evaluation finished; run it again."


# ---------------------------------------------------------------------------------- rows


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def _assistant_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if not content and message.get("tool_calls"):
        return json.dumps(message["tool_calls"], ensure_ascii=False, sort_keys=True)
    return _text(content)


def example_of(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    """(prompt messages, expected answer) from one formatted JSONL line, whatever its format."""
    messages = record.get("messages") or record.get("conversations")
    if isinstance(messages, list):
        last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)
        if last is None or last == 0:
            return None
        prompt = [m for m in messages[:last] if isinstance(m, dict)]
        return prompt, _assistant_text(messages[last])
    if isinstance(record.get("input"), dict) and record.get("preferred_output"):
        prompt = [m for m in record["input"].get("messages", []) if isinstance(m, dict)]
        return (prompt, _assistant_text(record["preferred_output"][0])) if prompt else None
    pair = example_from_line(record)
    if pair is None:
        return None
    return [{"role": "user", "content": pair[0]}], pair[1]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Lines split on b"\\n" only (U+2028 inside a string is content); small local reads."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield msgspec.json.decode(line)


def answer_of(completion: dict[str, Any]) -> str:
    choices = completion.get("choices") or []
    if not choices:
        return ""
    return _assistant_text(choices[0].get("message") or {})


# ---------------------------------------------------------------------------------- service


@dataclass
class _Run:
    """The in-memory state of one running evaluation."""

    evaluation_id: str
    tenant_id: str
    done: int = 0
    failed: int = 0
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    buffer: list[EvaluationResult] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, which: str, row_scores: dict[str, float]) -> None:
        sums = self.sums.setdefault(which, dict.fromkeys(METRICS, 0.0))
        for name in METRICS:
            sums[name] += row_scores[name]
        self.answered[which] = self.answered.get(which, 0) + 1

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for which, sums in self.sums.items():
            count = self.answered[which]
            out[which] = {name: round(sums[name] / count, 4) for name in METRICS} | {"answered": count}
        return out


@dataclass
class EvaluationsService:
    database: Database
    jobs: JobsService
    datasets: DatasetsService
    completions: CompletionsService
    flush_rows: int = 25
    flush_seconds: float = 0.5
    # A running evaluation touches its record at least this often; one silent for STALE_BEATS of
    # these lost its runner (kill -9, power loss), which a graceful stop would have recorded itself.
    heartbeat_seconds: float = 30.0
    _tasks: BackgroundTasks = field(default_factory=lambda: BackgroundTasks("evaluation"))

    # -- try a model ---------------------------------------------------------------------
    async def _literal_system_message(self, principal: Principal, job: Job) -> str | None:
        """The system message the training file was made with, when it was a literal one."""
        if not job.training_output_id:
            return None
        with contextlib.suppress(NotFound):
            output, _ = await self.datasets.output(principal, job.training_output_id)
            value = output.options.get("system_message")
            return value if isinstance(value, str) and value.strip() else None
        return None

    async def test(self, principal: Principal, job_id: str, body: JobTestBody) -> dict[str, Any]:
        job = await self.jobs.get(principal, job_id)
        if (body.messages is None) == (body.prompt is None):
            raise ValidationFailed("Send either 'messages' (a list of chat messages) or 'prompt' (a string).",
                                   param="messages")
        if body.prompt is not None:
            if not body.prompt.strip():
                raise ValidationFailed("'prompt' must not be empty.", param="prompt")
            messages: list[dict[str, Any]] = []
            system = await self._literal_system_message(principal, job)
            if system:
                messages.append({"role": "system", "content": system})
            messages.append({"role": "user", "content": body.prompt})
        else:
            messages = list(body.messages or [])
        route = self.completions.job_route(job)
        request = ChatCompletionRequest(model=route.model, messages=messages, max_tokens=body.max_tokens,
                                        temperature=body.temperature)
        validate_chat(request)
        return await self.completions.call(route, upstream_body(request, route.upstream, stream=False))

    # -- evaluations -----------------------------------------------------------------------
    @staticmethod
    def _validate(body: CreateEvaluationBody) -> None:
        if not 1 <= body.concurrency <= MAX_CONCURRENCY:
            raise ValidationFailed(f"'concurrency' must be between 1 and {MAX_CONCURRENCY}, got {body.concurrency}.",
                                   param="concurrency")
        if body.limit is not None and not 1 <= body.limit <= MAX_ROWS:
            raise ValidationFailed(f"'limit' must be between 1 and {MAX_ROWS}, got {body.limit}.", param="limit")
        if body.max_tokens is not None and not 1 <= body.max_tokens <= MAX_TOKENS_LIMIT:
            raise ValidationFailed(f"'max_tokens' must be between 1 and {MAX_TOKENS_LIMIT}, got {body.max_tokens}.",
                                   param="max_tokens")
        if not 0 <= body.temperature <= 2:
            raise ValidationFailed(f"'temperature' must be between 0 and 2, got {body.temperature:g}.",
                                   param="temperature")

    async def _format_request(self, principal: Principal, job: Job, body: CreateEvaluationBody) -> FormatRequest:
        options: dict[str, Any] = {"format_type": job.format_type, "data_strategy": job.data_strategy,
                                   "thinking_instructions": job.thinking_instructions}
        if job.training_output_id:
            with contextlib.suppress(NotFound):
                output, _ = await self.datasets.output(principal, job.training_output_id)
                options = {k: v for k, v in output.options.items() if k in FormatRequest.__struct_fields__}
        if body.dataset_path and body.dataset_path != job.dataset_id:
            await self.datasets.get(principal, body.dataset_path)
            kept = {k: options[k] for k in _FORMAT_FIELDS if k in options}
            return msgspec.convert({
                **kept, "dataset_path": body.dataset_path, "split_name": body.split_name or "all",
                "split_preset": body.split_preset, "column_mapping": body.column_mapping,
            }, FormatRequest)
        if job.dataset_id is None:
            raise Conflict("The job's dataset was deleted; pass 'dataset_path' (an uploaded dataset id) to "
                           "evaluate on another dataset.", param="dataset_path")
        options.update(dataset_path=job.dataset_id, split_name=body.split_name or "test")
        if body.split_preset:
            options["split_preset"] = body.split_preset
        if body.column_mapping is not None:
            options["column_mapping"] = body.column_mapping
        return msgspec.convert(options, FormatRequest)

    async def create(self, principal: Principal, job_id: str, body: CreateEvaluationBody) -> Evaluation:
        job = await self.jobs.get(principal, job_id)
        self._validate(body)
        route = self.completions.job_route(job)
        base = self.completions.job_route(job, base=True) if body.compare_base else None
        request = await self._format_request(principal, job, body)
        output = await self.datasets.format(principal, request)
        if output.rows_written == 0:
            raise ValidationFailed(
                f"Split {request.split_name!r} of dataset {request.dataset_path!r} has no row to evaluate "
                f"({output.error_count} rows had errors); choose another split_name or dataset_path.",
                param="split_name",
            )
        _, path = await self.datasets.output(principal, output.id)
        total = min(output.rows_written, body.limit or output.rows_written)
        evaluation = Evaluation(
            tenant_id=principal.tenant_id, job_id=job.id, status="queued", provider=job.provider, model=route.model,
            base_model=base.upstream if base else None, dataset_id=request.dataset_path,
            split_name=request.split_name, output_id=output.id, total=total,
            parameters={"compare_base": body.compare_base, "concurrency": body.concurrency, "limit": body.limit,
                        "max_tokens": body.max_tokens, "temperature": body.temperature,
                        "format_type": request.format_type, "split_preset": request.split_preset},
        )
        async with self.database.session() as session:
            session.add(evaluation)
        run = _Run(evaluation.id, principal.tenant_id)
        self._tasks.spawn(evaluation.id, self._run(run, route, base, path, total, body))
        return evaluation

    async def _update(self, evaluation_id: str, **values: Any) -> None:
        async with self.database.session() as session:
            row = await session.get(Evaluation, evaluation_id)
            if row is None:
                return
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()

    async def _flush(self, run: _Run, *, force: bool = False) -> None:
        async with run.lock:
            if not force and len(run.buffer) < self.flush_rows and \
                    time.monotonic() - run.last_flush < self.flush_seconds:
                return
            rows, run.buffer = run.buffer, []
            async with self.database.session() as session:
                session.add_all(rows)
                row = await session.get(Evaluation, run.evaluation_id)
                if row is not None:
                    row.done, row.failed, row.updated_at = run.done, run.failed, utcnow()
            run.last_flush = time.monotonic()

    async def _ask(self, route: Route, messages: list[dict[str, Any]], body: CreateEvaluationBody
                   ) -> tuple[str | None, str | None]:
        request: dict[str, Any] = {"model": route.upstream, "messages": messages, "temperature": body.temperature}
        if body.max_tokens is not None:
            request["max_tokens"] = body.max_tokens
        try:
            return answer_of(await self.completions.call(route, request)), None
        except DomainError as error:
            return None, error.detail

    async def _row(self, run: _Run, index: int, record: dict[str, Any], route: Route, base: Route | None,
                   body: CreateEvaluationBody) -> None:
        example = example_of(record)
        result = EvaluationResult(evaluation_id=run.evaluation_id, tenant_id=run.tenant_id, row_index=index,
                                  expected="")
        if example is None:
            result.error = "This row has no assistant answer to compare with."
        else:
            messages, expected = example
            result.messages, result.expected = messages, expected
            asks = [self._ask(route, messages, body)] + ([self._ask(base, messages, body)] if base else [])
            outcomes = await asyncio.gather(*asks)
            answer, error = outcomes[0]
            errors = [f"fine-tuned model: {error}"] if error else []
            if answer is not None:
                result.answer, result.scores = answer, scores(answer, expected)
                run.add("fine_tuned", result.scores)
            if base is not None:
                base_answer, base_error = outcomes[1]
                if base_error:
                    errors.append(f"base model: {base_error}")
                if base_answer is not None:
                    result.base_answer, result.base_scores = base_answer, scores(base_answer, expected)
                    run.add("base", result.base_scores)
            result.error = "; ".join(errors) or None
        run.done += 1
        if result.answer is None:
            run.failed += 1
            run.first_error = run.first_error or result.error
        run.buffer.append(result)
        await self._flush(run)

    async def _run(self, run: _Run, route: Route, base: Route | None, path: Path, total: int,
                   body: CreateEvaluationBody) -> None:
        tasks: set[asyncio.Task[None]] = set()
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(run.evaluation_id))
        try:
            await self._update(run.evaluation_id, status="running", started_at=utcnow())
            semaphore = asyncio.Semaphore(body.concurrency)

            async def bounded(index: int, record: dict[str, Any]) -> None:
                try:
                    await self._row(run, index, record, route, base, body)
                finally:
                    semaphore.release()

            for index, record in enumerate(read_jsonl(path)):
                if index >= total:
                    break
                await semaphore.acquire()
                task = asyncio.get_running_loop().create_task(bounded(index, record))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
            await self._flush(run, force=True)
            if run.done and run.failed == run.done:
                await self._update(run.evaluation_id, status="failed", finished_at=utcnow(), metrics=run.metrics(),
                                   error=f"Every row failed; the first error: {run.first_error}")
            else:
                await self._update(run.evaluation_id, status="succeeded", finished_at=utcnow(),
                                   metrics=run.metrics())
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await self._update(run.evaluation_id, status="failed", finished_at=utcnow(), metrics=run.metrics(),
                               error=INTERRUPTED)
            raise
        except Exception as error:
            log.exception("evaluation %s failed", run.evaluation_id)
            for task in tasks:
                task.cancel()
            detail = error.detail if isinstance(error, DomainError) else f"Unexpected error ({type(error).__name__})"
            await self._update(run.evaluation_id, status="failed", finished_at=utcnow(), metrics=run.metrics(),
                               error=detail)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, evaluation_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self._update(evaluation_id)

    async def _settled(self, query: Select[Evaluation]) -> list[Evaluation]:
        """The evaluations `query` selects, with runs whose runner is gone recorded as failed. The
        update re-checks staleness, so a run that beat in the meantime keeps running."""
        async with self.database.session() as session:
            rows = list((await session.execute(query)).scalars())
            cutoff = utcnow() - timedelta(seconds=self.heartbeat_seconds * STALE_BEATS)
            stale = [row.id for row in rows if row.status in UNFINISHED and row.updated_at < cutoff]
            if not stale:
                return rows
            now = utcnow()
            await session.execute(update(Evaluation).where(
                col(Evaluation.id).in_(stale), col(Evaluation.status).in_(UNFINISHED),
                col(Evaluation.updated_at) < cutoff,
            ).values(status="failed", error=INTERRUPTED, finished_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
            return list((await session.execute(query.execution_options(populate_existing=True))).scalars())

    async def get(self, principal: Principal, job_id: str, evaluation_id: str) -> Evaluation:
        await self.jobs.get(principal, job_id)
        rows = await self._settled(select(Evaluation).where(
            col(Evaluation.id) == evaluation_id, col(Evaluation.tenant_id) == principal.tenant_id,
            col(Evaluation.job_id) == job_id))
        if not rows:
            raise NotFound(f"Evaluation {evaluation_id!r} of job {job_id!r} does not exist", param="evaluation_id")
        return rows[0]

    async def list_for_job(self, principal: Principal, job_id: str) -> list[Evaluation]:
        await self.jobs.get(principal, job_id)
        return await self._settled(select(Evaluation).where(
            col(Evaluation.tenant_id) == principal.tenant_id, col(Evaluation.job_id) == job_id,
        ).order_by(col(Evaluation.created_at).desc(), col(Evaluation.id).desc()))

    async def results(self, principal: Principal, job_id: str, evaluation_id: str
                      ) -> tuple[Evaluation, AsyncIterator[bytes]]:
        """The evaluation (checked now) and its scored rows as JSONL lines, in row order."""
        evaluation = await self.get(principal, job_id, evaluation_id)
        return evaluation, self._lines(evaluation)

    async def _lines(self, evaluation: Evaluation, page: int = 500) -> AsyncIterator[bytes]:
        last = -1
        compare = evaluation.base_model is not None
        while True:
            async with self.database.session() as session:
                rows = list((await session.execute(
                    select(EvaluationResult).where(col(EvaluationResult.evaluation_id) == evaluation.id,
                                                   col(EvaluationResult.row_index) > last)
                    .order_by(col(EvaluationResult.row_index)).limit(page)
                )).scalars())
            if not rows:
                return
            for row in rows:
                line: dict[str, Any] = {"row": row.row_index, "messages": row.messages, "expected": row.expected,
                                        "answer": row.answer, "scores": row.scores or None}
                if compare:
                    line |= {"base_answer": row.base_answer, "base_scores": row.base_scores or None}
                line["error"] = row.error
                yield _encoder.encode(line) + b"\n"
            last = rows[-1].row_index

    async def close(self) -> None:
        await self._tasks.close()


def evaluation_view(row: Evaluation) -> EvaluationView:
    return EvaluationView(
        id=row.id, job_id=row.job_id, status=row.status, provider=row.provider, model=row.model,
        base_model=row.base_model, dataset_path=row.dataset_id, split_name=row.split_name,
        parameters=dict(row.parameters), total=row.total, done=row.done, failed=row.failed,
        progress=round(100.0 * row.done / row.total, 2) if row.total else 0.0, metrics=dict(row.metrics),
        error=row.error, results_url=f"/api/finetune/jobs/{row.job_id}/evaluations/{row.id}/results",
        created_at=row.created_at, updated_at=row.updated_at, started_at=row.started_at,
        finished_at=row.finished_at,
    )
