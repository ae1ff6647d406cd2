"""OpenAI fine-tuning through the official `openai` SDK (3.x, `AsyncOpenAI`); streamed chat
completions are opened with one aiohttp request instead (`providers/chat_streams.py` says why).

Wire facts this adapter relies on are in `shared/specs/PROVIDERS.md` §2: hyperparameters
go under `method.<type>.hyperparameters`; jobs carry our `client_reference` in `metadata`
so `find_job` can list with `metadata[client_reference]=...` after a crash; statuses are
`validating_files → queued → running → succeeded` (+ `paused`, `failed`, `cancelled`).
Keys come from settings only and never appear in errors.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI

from finetune_service.errors import ProviderError, ValidationFailed
from finetune_service.providers.base import (
    AudioRequest,
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
from finetune_service.providers.chat_streams import ChatStreamOpener
from finetune_service.providers.parameters import ParamSpec, validate_parameters
from finetune_service.providers.upstream_http import backoff_delay, retry_after
from finetune_service.settings import ProviderCredentials

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DISPLAY_NAME = "OpenAI"
CLIENT_REFERENCE_KEY = "client_reference"
MAX_SUFFIX_LENGTH = 64
_T = TypeVar("_T")

# Fine-tunable snapshots (OpenAI fine-tuning guide). Context = the longest training example.
FINE_TUNABLE_MODELS: tuple[BaseModelInfo, ...] = tuple(
    BaseModelInfo(
        id=model_id, name=name, context_length=context, supports_lora=False, supports_full=True,
        training_methods=methods,
    )
    for model_id, name, context, methods in (
        ("gpt-4.1-2025-04-14", "GPT-4.1 (2025-04-14)", 65_536, ("sft", "dpo")),
        ("gpt-4.1-mini-2025-04-14", "GPT-4.1 mini (2025-04-14)", 65_536, ("sft", "dpo")),
        ("gpt-4.1-nano-2025-04-14", "GPT-4.1 nano (2025-04-14)", 65_536, ("sft", "dpo")),
        ("gpt-4o-2024-08-06", "GPT-4o (2024-08-06)", 65_536, ("sft", "dpo")),
        ("gpt-4o-mini-2024-07-18", "GPT-4o mini (2024-07-18)", 65_536, ("sft", "dpo")),
        ("gpt-3.5-turbo-0125", "GPT-3.5 Turbo (0125)", 16_385, ("sft",)),
        ("gpt-3.5-turbo-1106", "GPT-3.5 Turbo (1106)", 16_385, ("sft",)),
    )
)

_STATUS = {
    "validating_files": JobStatus.VALIDATING,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

PARAMETER_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("method", "enum", "Training method: supervised fine-tuning on chat examples, or direct "
              "preference optimisation (DPO) on preferred / non-preferred answer pairs.",
              default="supervised", choices=("supervised", "dpo")),
    ParamSpec("n_epochs", "integer", "Full passes over the training file; 'auto' lets OpenAI pick from the "
              "dataset size.", default="auto", minimum=1, maximum=50, also_accepts=("auto",)),
    ParamSpec("batch_size", "integer", "Examples per batch; larger batches update less often but with lower "
              "variance. 'auto' lets OpenAI pick.", default="auto", minimum=1, maximum=256, also_accepts=("auto",)),
    ParamSpec("learning_rate_multiplier", "number", "Scales OpenAI's base learning rate; smaller values can "
              "reduce overfitting. 'auto' lets OpenAI pick.", default="auto", minimum=0, exclusive_minimum=True,
              also_accepts=("auto",)),
    ParamSpec("beta", "number", "DPO only: weight of the penalty between the policy and the reference model "
              "(higher = stay closer to the reference). Omit for 'auto'.", minimum=0, exclusive_minimum=True,
              maximum=2, also_accepts=("auto",)),
    ParamSpec("suffix", "string", f"Up to {MAX_SUFFIX_LENGTH} characters added to the fine-tuned model name "
              "(ft:<model>:<org>:<suffix>:<id>)."),
    ParamSpec("seed", "integer", "Seed for reproducible training; OpenAI picks one when omitted.", minimum=0,
              maximum=2_147_483_647),
)


def _ts(value: int | float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return error.message


def _refused(error: BaseException) -> bool:
    """Whether a connection error (refused, reset) caused `error`: the SDK's aiohttp transport
    reports every aiohttp connection error as a connect timeout."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, ConnectionError):
            return True
        cause = cause.__cause__
    return False


def map_openai_status(status: int, message: str, asked_wait: float | None) -> ProviderError:
    """Our `ProviderError` for an HTTP error answer from OpenAI."""
    provider = DISPLAY_NAME
    if status == 401:
        return ProviderError("OpenAI rejected the configured API key", provider=provider, status=502)
    if status == 403:
        return ProviderError(f"OpenAI refused the request: {message}", provider=provider, status=502)
    if status == 404:
        return ProviderError(message, provider=provider, status=404)
    if status == 409:
        return ProviderError(message, provider=provider, status=409, retryable=True)
    if status == 429:
        return ProviderError(f"OpenAI rate limit: {message}", provider=provider, status=429,
                             retry_after=asked_wait, retryable=True)
    if status >= 500:
        return ProviderError(f"OpenAI is unavailable ({status}): {message}", provider=provider, status=502,
                             retry_after=asked_wait, retryable=True)
    return ProviderError(message, provider=provider, status=422)


def map_openai_error(error: Exception) -> ProviderError:
    """Turn an SDK exception into our `ProviderError` (keys never included)."""
    provider = DISPLAY_NAME
    if isinstance(error, openai.APITimeoutError) and not _refused(error):
        return ProviderError("OpenAI did not answer in time", provider=provider, status=504, retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return ProviderError("Could not reach OpenAI", provider=provider, status=502, retryable=True)
    if isinstance(error, openai.APIStatusError):
        return map_openai_status(error.status_code, _error_message(error), retry_after(error.response.headers))
    if isinstance(error, openai.APIError):  # e.g. an error event in the middle of a stream
        return ProviderError(f"OpenAI error: {error.message}", provider=provider, status=502, retryable=True)
    return ProviderError(f"Unexpected OpenAI client error: {type(error).__name__}", provider=provider, status=502)


@functools.cache
def _named_parameters(method: Callable[..., Any]) -> frozenset[str]:
    # inspect.signature of the SDK's overloaded methods costs more than a whole streamed chunk.
    return frozenset(inspect.signature(method).parameters) - {"extra_headers", "extra_query", "extra_body", "timeout"}


def _sdk_kwargs(method: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    """`body` as keyword arguments of an SDK method; fields the SDK doesn't name go in `extra_body`
    (provider-specific sampling options such as `top_k` would otherwise be a TypeError)."""
    known = _named_parameters(getattr(method, "__func__", method))
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _dump(model: Any) -> dict[str, Any]:
    data = model.to_dict(mode="json")
    return data if isinstance(data, dict) else {}


class OpenAIProvider:
    """`FineTuneProvider` for OpenAI."""

    name = ProviderName.OPENAI
    display_name = DISPLAY_NAME

    def __init__(
        self, credentials: ProviderCredentials, *, timeout: float = 30.0, max_retries: int = 2, page_size: int = 100,
    ) -> None:
        self._credentials = credentials
        self._page_size = page_size
        self._timeout = timeout
        self._max_retries = max_retries
        self._client: AsyncOpenAI | None = None
        self._opener: ChatStreamOpener | None = None

    # ------------------------------------------------------------------ basics

    @property
    def configured(self) -> bool:
        return bool(self._credentials.api_key)

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            if not self._credentials.api_key:
                raise ProviderError("OpenAI is not configured: set OPENAI_API_KEY", provider=DISPLAY_NAME,
                                    status=503)
            self._client = AsyncOpenAI(
                api_key=self._credentials.api_key,
                base_url=self._credentials.base_url or DEFAULT_BASE_URL,
                timeout=self._timeout,
                max_retries=self._max_retries,
                # The SDK's aiohttp transport (`openai[aiohttp]`) sends a request for about half the
                # CPU of its default httpx2 one; relayed completions and embeddings pay it each time.
                http_client=openai.DefaultAioHttpClient(),
            )
        return self._client

    async def aclose(self) -> None:
        if self._opener is not None:
            await self._opener.aclose()
            self._opener = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def parameter_specs(self) -> Sequence[ParamSpec]:
        return PARAMETER_SPECS

    def static_models(self) -> Sequence[BaseModelInfo]:
        return FINE_TUNABLE_MODELS

    async def _call(self, factory: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await factory()
        except ProviderError:
            raise
        except openai.OpenAIError as error:
            raise map_openai_error(error) from error
        except TypeError as error:  # the SDK refuses a malformed body (e.g. a missing required field)
            raise ProviderError(f"Invalid request for OpenAI: {error}", provider=DISPLAY_NAME, status=422) from error

    async def list_models(self) -> list[BaseModelInfo]:
        """The fine-tunable snapshots this key can see (the caller falls back to `static_models`)."""
        page = await self._call(lambda: self.client.models.list())
        visible = {model.id async for model in page}
        return [info for info in FINE_TUNABLE_MODELS if info.id in visible]

    # ------------------------------------------------------------------ files and jobs

    async def upload_file(self, path: Path, filename: str) -> ProviderFile:
        content = await asyncio.to_thread(path.read_bytes)
        created = await self._call(
            lambda: self.client.files.create(file=(filename, content, "application/jsonl"), purpose="fine-tune")
        )
        return ProviderFile(id=created.id, filename=created.filename, bytes=created.bytes)

    def _job_body(self, request: CreateJobRequest) -> dict[str, Any]:
        params = validate_parameters(DISPLAY_NAME, PARAMETER_SPECS, request.parameters)
        method = params.get("method", "supervised")
        if method != "dpo" and "beta" in params:
            raise ValidationFailed("beta applies only to method 'dpo'", param="parameters.beta",
                                   errors=[{"field": "parameters.beta", "message": "applies only to method 'dpo'"}])
        names = ("n_epochs", "batch_size", "learning_rate_multiplier")
        hyper: dict[str, Any] = {k: params[k] for k in names if k in params}
        if method == "dpo":
            hyper["beta"] = params.get("beta", "auto")
        body: dict[str, Any] = {
            "model": request.model,
            "training_file": request.training_file_id,
            "method": {"type": method, method: {"hyperparameters": hyper}},
            "metadata": {CLIENT_REFERENCE_KEY: request.client_reference},
        }
        suffix = request.suffix or params.get("suffix")
        if suffix:
            if len(suffix) > MAX_SUFFIX_LENGTH:
                raise ValidationFailed(
                    f"suffix must be at most {MAX_SUFFIX_LENGTH} characters", param="parameters.suffix",
                    errors=[{"field": "parameters.suffix", "message": f"at most {MAX_SUFFIX_LENGTH} characters"}],
                )
            body["suffix"] = suffix
        if request.validation_file_id:
            body["validation_file"] = request.validation_file_id
        if params.get("seed") is not None:
            body["seed"] = params["seed"]
        return body

    async def create_job(self, request: CreateJobRequest) -> ProviderJob:
        """Create a job without ever creating two for one `client_reference`.

        The SDK's own retries are off for this POST: after a timeout or 5xx the job may exist,
        so before each re-submit we look it up by metadata (PROVIDERS.md §5.3).
        """
        body = self._job_body(request)
        client = self.client.with_options(max_retries=0)
        attempt = 0
        while True:
            try:
                job = await client.fine_tuning.jobs.create(**body)
            except openai.OpenAIError as error:
                mapped = map_openai_error(error)
                if not mapped.retryable:
                    raise mapped from error
                if mapped.status != 429:  # a 429 was refused outright; anything else may have gone through
                    existing = await self._find_quietly(request.client_reference)
                    if existing is not None:
                        return existing
                if attempt >= self._max_retries:
                    raise mapped from error
                delay = backoff_delay(attempt, mapped.retry_after, cap=8.0)
                attempt += 1
                log.info("OpenAI job create failed (%s); retry %d in %.2fs", mapped.status, attempt, delay)
                await asyncio.sleep(delay)
                continue
            return self._to_job(job)

    async def _find_quietly(self, client_reference: str) -> ProviderJob | None:
        try:
            return await self.find_job(client_reference)
        except ProviderError as error:
            log.warning("OpenAI job lookup for %s failed: %s", client_reference, error.detail)
            return None

    async def find_job(self, client_reference: str) -> ProviderJob | None:
        """The newest job carrying our reference, via the metadata filter (checked, in case it's ignored)."""
        page = await self._call(lambda: self.client.fine_tuning.jobs.list(
            metadata={CLIENT_REFERENCE_KEY: client_reference}, limit=min(self._page_size, 100),
        ))
        scanned = 0
        try:
            async for job in page:
                if (job.metadata or {}).get(CLIENT_REFERENCE_KEY) == client_reference:
                    return self._to_job(job)
                scanned += 1
                if scanned >= 500:
                    break
        except openai.OpenAIError as error:
            raise map_openai_error(error) from error
        return None

    async def get_job(self, job_id: str) -> ProviderJob:
        job = await self._call(lambda: self.client.fine_tuning.jobs.retrieve(job_id))
        metrics: dict[str, Any] = {}
        if job.status in ("running", "paused", "succeeded"):
            metrics = await self._latest_metrics(job_id)
        return self._to_job(job, metrics)

    async def cancel_job(self, job_id: str) -> ProviderJob:
        job = await self._call(lambda: self.client.fine_tuning.jobs.cancel(job_id))
        return self._to_job(job)

    async def pause_job(self, job_id: str) -> ProviderJob:
        job = await self._call(lambda: self.client.fine_tuning.jobs.pause(job_id))
        return self._to_job(job)

    async def resume_job(self, job_id: str) -> ProviderJob:
        job = await self._call(lambda: self.client.fine_tuning.jobs.resume(job_id))
        return self._to_job(job)

    async def list_events(self, job_id: str) -> list[ProviderEvent]:
        """All events, oldest first (OpenAI pages them newest first)."""
        page = await self._call(lambda: self.client.fine_tuning.jobs.list_events(job_id, limit=self._page_size))
        events: list[ProviderEvent] = []
        try:
            async for event in page:
                events.append(ProviderEvent(
                    id=event.id, created_at=_ts(event.created_at) or datetime.now(UTC), message=event.message,
                    level=event.level, type=event.type or "message",
                ))
                if len(events) >= 5000:
                    break
        except openai.OpenAIError as error:
            raise map_openai_error(error) from error
        events.reverse()
        return events

    async def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        """All checkpoints, lowest step first."""
        page = await self._call(lambda: self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=self._page_size))
        checkpoints: list[ProviderCheckpoint] = []
        try:
            async for c in page:
                checkpoints.append(ProviderCheckpoint(
                    id=c.id, step=c.step_number, created_at=_ts(c.created_at), model=c.fine_tuned_model_checkpoint,
                    metrics={k: v for k, v in c.metrics.to_dict().items() if v is not None},
                ))
        except openai.OpenAIError as error:
            raise map_openai_error(error) from error
        checkpoints.sort(key=lambda c: c.step or 0)
        return checkpoints

    async def _latest_metrics(self, job_id: str) -> dict[str, Any]:
        """The newest `metrics` event's data (step, total_steps, train_loss, ...); {} if unavailable."""
        try:
            page = await self.client.fine_tuning.jobs.list_events(job_id, limit=50)
        except openai.OpenAIError as error:
            log.warning("OpenAI metrics for %s unavailable: %s", job_id, map_openai_error(error).detail)
            return {}
        for event in page.data:
            if event.type == "metrics" and isinstance(event.data, dict):
                return dict(event.data)
        return {}

    def _to_job(self, job: Any, metrics: dict[str, Any] | None = None) -> ProviderJob:
        raw = str(job.status)
        status = _STATUS.get(raw, JobStatus.RUNNING)
        metrics = dict(metrics or {})
        progress: float | None = None
        if status is JobStatus.SUCCEEDED:
            progress = 100.0
        elif status in (JobStatus.VALIDATING, JobStatus.QUEUED):
            progress = 0.0
        elif metrics.get("step") and metrics.get("total_steps"):
            progress = round(min(100.0, 100.0 * float(metrics["step"]) / float(metrics["total_steps"])), 2)
        if job.trained_tokens is not None:
            metrics["trained_tokens"] = job.trained_tokens
        error = None
        if job.error is not None and (job.error.message or job.error.code):
            error = job.error.message or job.error.code
        return ProviderJob(
            id=job.id, status=status, raw_status=raw, model=job.model, fine_tuned_model=job.fine_tuned_model,
            progress=progress, metrics=metrics, error=error, created_at=_ts(job.created_at),
            finished_at=_ts(job.finished_at), trained_tokens=job.trained_tokens,
        )

    # ------------------------------------------------------------------ inference

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        request = {k: v for k, v in body.items() if k != "stream"}
        create = self.client.chat.completions.create
        completion = await self._call(lambda: create(**_sdk_kwargs(create, request)))
        return _dump(completion)

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Opens the upstream stream now (its errors raise here); the iterator yields chunk dicts."""
        request = dict(body, stream=True)
        request.setdefault("stream_options", {"include_usage": True})
        return await self._streams().open(request)

    def _streams(self) -> ChatStreamOpener:
        if self._opener is None:
            client = self.client  # refuses with a clear error when no key is configured
            self._opener = ChatStreamOpener(
                provider=DISPLAY_NAME, url=f"{client.base_url}chat/completions",
                api_key=client.api_key,
                timeout=self._timeout, max_retries=self._max_retries, map_status=map_openai_status,
            )
        return self._opener

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        request = dict(body)
        request.setdefault("encoding_format", "float")
        create = self.client.embeddings.create
        response = await self._call(lambda: create(**_sdk_kwargs(create, request)))
        return _dump(response)

    # ------------------------------------------------------------------ images and audio

    async def generate_image(self, request: ImageRequest) -> list[GeneratedImage]:
        """`images.generate`, always as base64 (GPT image models only return that; DALL-E is asked
        for it), so the service stores the image itself instead of handing out OpenAI's URL."""
        kwargs: dict[str, Any] = {"model": request.model, "prompt": request.prompt, "n": request.n}
        if request.size:
            kwargs["size"] = request.size
        if request.quality:
            kwargs["quality"] = request.quality
        if request.style:
            kwargs["style"] = request.style
        if not request.model.startswith("gpt-image"):
            kwargs["response_format"] = "b64_json"
        response = await self._call(lambda: self.client.images.generate(**kwargs))
        images = []
        for item in response.data or []:
            if not item.b64_json:
                raise ProviderError("OpenAI answered without image data", provider=DISPLAY_NAME, status=502)
            images.append(GeneratedImage(data=base64.b64decode(item.b64_json),
                                         media_type=f"image/{response.output_format or 'png'}",
                                         revised_prompt=item.revised_prompt))
        return images

    async def _audio(self, create: Callable[..., Awaitable[Any]], request: AudioRequest) -> dict[str, Any] | str:
        kwargs: dict[str, Any] = {"model": request.model, "response_format": request.response_format,
                                  "file": (request.filename, request.data, request.media_type)}
        for name in ("prompt", "language", "temperature"):
            if getattr(request, name) is not None:
                kwargs[name] = getattr(request, name)
        result = await self._call(lambda: create(**kwargs))
        return result if isinstance(result, str) else _dump(result)

    async def transcribe(self, request: AudioRequest) -> dict[str, Any] | str:
        return await self._audio(self.client.audio.transcriptions.create, request)

    async def translate(self, request: AudioRequest) -> dict[str, Any] | str:
        if request.language is not None:
            raise ValidationFailed("OpenAI translations always translate into English; drop 'language'.",
                                   param="language")
        return await self._audio(self.client.audio.translations.create, request)
