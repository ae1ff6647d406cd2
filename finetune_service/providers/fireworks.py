"""Fireworks AI fine-tuning over its REST API with `httpx` (no SDK).

Wire facts are in `shared/specs/PROVIDERS.md` §3: control plane at
`{base}/v1/accounts/{account}/...` with camelCase JSON and grpc-style errors
(`{"code": 6, "message": ...}`), custom verbs as `{id}:upload` / `{id}:cancel`, inference at
`{base}/inference/v1/...` with OpenAI-style bodies.

Idempotency: datasets are named after a hash of their content and jobs after our
`client_reference`, so any retry (ours, or the service's after a crash) gets
`ALREADY_EXISTS` and we fetch the existing resource instead of paying twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

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
from finetune_service.providers.chat_streams import ChatStreamOpener
from finetune_service.providers.parameters import ParamSpec, validate_parameters
from finetune_service.providers.upstream_http import backoff_delay, error_message, retry_after
from finetune_service.settings import ProviderCredentials

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.fireworks.ai"
DISPLAY_NAME = "Fireworks AI"
BASE_ACCOUNT = "fireworks"
MAX_DIRECT_UPLOAD_BYTES = 150 * 1024 * 1024

STATIC_MODELS: tuple[BaseModelInfo, ...] = tuple(
    BaseModelInfo(id=f"accounts/{BASE_ACCOUNT}/models/{model_id}", name=name, context_length=context,
                  supports_lora=True, supports_full=False, training_methods=("sft",))
    for model_id, name, context in (
        ("llama-v3p1-8b-instruct", "Llama 3.1 8B Instruct", 131_072),
        ("llama-v3p1-70b-instruct", "Llama 3.1 70B Instruct", 131_072),
        ("llama-v3p2-3b-instruct", "Llama 3.2 3B Instruct", 131_072),
        ("llama-v3p3-70b-instruct", "Llama 3.3 70B Instruct", 131_072),
        ("qwen3-8b", "Qwen3 8B", 40_960),
        ("qwen2p5-7b-instruct", "Qwen2.5 7B Instruct", 32_768),
        ("qwen2p5-72b-instruct", "Qwen2.5 72B Instruct", 32_768),
    )
)

# Names are Fireworks' camelCase wire names, so parameters pass straight into the job body.
PARAMETER_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("epochs", "integer", "Full passes over the dataset.", default=1, minimum=1, maximum=100),
    ParamSpec("learningRate", "number", "Peak learning rate of the LoRA adapter.", default=0.0001, minimum=0,
              exclusive_minimum=True, maximum=1),
    ParamSpec("loraRank", "enum", "Rank of the LoRA adapter; higher learns more but costs more to serve.",
              default=8, choices=(4, 8, 16, 32, 64)),
    ParamSpec("maxContextLength", "integer", "Longest training sequence in tokens; longer examples are "
              "truncated. Defaults to the base model's own limit.", minimum=512, maximum=131_072),
    ParamSpec("batchSize", "integer", "Tokens per training batch (Fireworks packs examples up to this size). "
              "Defaults to Fireworks' choice for the model.", minimum=1024, maximum=1_048_576),
    ParamSpec("batchSizeSamples", "integer", "Examples per batch, as an alternative to batchSize in tokens.",
              minimum=1, maximum=1024),
    ParamSpec("learningRateWarmupSteps", "integer", "Steps over which the learning rate ramps up from zero.",
              minimum=0, maximum=100_000),
    ParamSpec("gradientAccumulationSteps", "integer", "Batches whose gradients are summed before one "
              "optimiser step (a larger effective batch).", minimum=1, maximum=1024),
    ParamSpec("optimizerWeightDecay", "number", "AdamW weight decay.", minimum=0, maximum=1),
    ParamSpec("earlyStop", "boolean", "Stop when the evaluation loss stops improving (needs a validation "
              "file or evalAutoCarveout)."),
    ParamSpec("evalAutoCarveout", "boolean", "Hold out part of the training data for evaluation when no "
              "validation file is given."),
    ParamSpec("isTurbo", "boolean", "Use Fireworks' faster (more expensive) turbo training."),
    ParamSpec("outputModel", "string", "ID of the resulting model (lowercase letters, digits, hyphens); "
              "defaults to the job ID."),
)

_STATES = {
    "JOB_STATE_CREATING": JobStatus.QUEUED,
    "JOB_STATE_PENDING": JobStatus.QUEUED,
    "JOB_STATE_VALIDATING": JobStatus.QUEUED,
    "JOB_STATE_RE_QUEUEING": JobStatus.QUEUED,
    "JOB_STATE_CREATING_INPUT_DATASET": JobStatus.QUEUED,
    "JOB_STATE_IDLE": JobStatus.QUEUED,
    "JOB_STATE_UNSPECIFIED": JobStatus.QUEUED,
    "JOB_STATE_RUNNING": JobStatus.RUNNING,
    "JOB_STATE_WRITING_RESULTS": JobStatus.RUNNING,
    "JOB_STATE_ROLLOUT": JobStatus.RUNNING,
    "JOB_STATE_EVALUATION": JobStatus.RUNNING,
    "JOB_STATE_COMPLETED": JobStatus.SUCCEEDED,
    "JOB_STATE_EARLY_STOPPED": JobStatus.SUCCEEDED,
    "JOB_STATE_FAILED": JobStatus.FAILED,
    "JOB_STATE_EXPIRED": JobStatus.FAILED,
    "JOB_STATE_CANCELLING": JobStatus.CANCELLED,
    "JOB_STATE_CANCELLED": JobStatus.CANCELLED,
    "JOB_STATE_DELETING": JobStatus.CANCELLED,
    "JOB_STATE_DELETING_CLEANING_UP": JobStatus.CANCELLED,
    "JOB_STATE_PAUSED": JobStatus.PAUSED,
}
_ID_OK = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def job_id_for(client_reference: str) -> str:
    """Our deterministic Fireworks job id: readable slug + hash, valid for `[a-z][a-z0-9-]{0,62}`."""
    slug = re.sub(r"[^a-z0-9]+", "-", client_reference.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(client_reference.encode()).hexdigest()[:10]
    return f"ft-{slug}-{digest}" if slug else f"ft-{digest}"


def dataset_id_for(content: bytes) -> str:
    return "ds-" + hashlib.sha256(content).hexdigest()[:32]


def _last_segment(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _detect_format(content: bytes) -> tuple[str, int]:
    """(Fireworks dataset format, example count) of a JSONL file."""
    count, fmt = 0, None
    for line in content.split(b"\n"):
        if not line.strip():
            continue
        count += 1
        if fmt is None:
            try:
                record = json.loads(line)
            except ValueError:
                fmt = "CHAT"
                continue
            is_completion = isinstance(record, dict) and "prompt" in record and "completion" in record
            fmt = "COMPLETION" if is_completion and "messages" not in record else "CHAT"
    return fmt or "CHAT", count


def map_fireworks_response(response: httpx.Response) -> ProviderError:
    return map_fireworks_status(response.status_code, error_message(response.content, response.reason_phrase),
                                retry_after(response.headers))


def map_fireworks_status(status: int, message: str, asked_wait: float | None) -> ProviderError:
    """Our `ProviderError` for an HTTP error answer from Fireworks AI."""
    if status == 401:
        return ProviderError("Fireworks AI rejected the configured API key", provider=DISPLAY_NAME, status=502)
    if status == 403:
        return ProviderError(f"Fireworks AI refused access (check FIREWORKS_ACCOUNT_ID): {message}",
                             provider=DISPLAY_NAME, status=502)
    if status == 404:
        return ProviderError(message, provider=DISPLAY_NAME, status=404)
    if status == 409:
        return ProviderError(message, provider=DISPLAY_NAME, status=409)
    if status == 429:
        return ProviderError(f"Fireworks AI rate limit: {message}", provider=DISPLAY_NAME, status=429,
                             retry_after=asked_wait, retryable=True)
    if status == 408:
        return ProviderError("Fireworks AI timed out", provider=DISPLAY_NAME, status=504, retryable=True)
    if status >= 500:
        return ProviderError(f"Fireworks AI is unavailable ({status}): {message}", provider=DISPLAY_NAME,
                             status=502, retry_after=asked_wait, retryable=True)
    if status == 402:
        return ProviderError(f"Fireworks AI account cannot be billed: {message}", provider=DISPLAY_NAME,
                             status=502)
    return ProviderError(message, provider=DISPLAY_NAME, status=422)


class FireworksProvider:
    """`FineTuneProvider` for Fireworks AI (supervised LoRA fine-tuning)."""

    name = ProviderName.FIREWORKS_AI
    display_name = DISPLAY_NAME

    def __init__(
        self,
        credentials: ProviderCredentials,
        *,
        timeout: float = 30.0,
        upload_timeout: float = 300.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_retry_after: float = 60.0,
        dataset_ready_polls: int = 20,
        poll_interval: float = 0.5,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._upload_timeout = upload_timeout
        self._max_retries = max_retries
        self._delay = functools.partial(backoff_delay, base=backoff_base, cap=backoff_cap, max_asked=max_retry_after)
        self._dataset_ready_polls = dataset_ready_polls
        self._poll_interval = poll_interval
        self._client: httpx.AsyncClient | None = None
        self._opener: ChatStreamOpener | None = None

    # ------------------------------------------------------------------ basics

    @property
    def configured(self) -> bool:
        return bool(self._credentials.api_key and self._credentials.account_id)

    @property
    def account(self) -> str:
        return self._credentials.account_id or ""

    @property
    def base_url(self) -> str:
        base = (self._credentials.base_url or DEFAULT_BASE_URL).rstrip("/")
        for suffix in ("/inference/v1", "/v1"):
            base = base.removesuffix(suffix)
        return base

    def _http(self) -> httpx.AsyncClient:
        if not self.configured:
            raise ProviderError("Fireworks AI is not configured: set FIREWORKS_API_KEY and FIREWORKS_ACCOUNT_ID",
                                provider=DISPLAY_NAME, status=503)
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._credentials.api_key}", "Accept": "application/json"},
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
            )
        return self._client

    async def aclose(self) -> None:
        if self._opener is not None:
            await self._opener.aclose()
            self._opener = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def parameter_specs(self) -> Sequence[ParamSpec]:
        return PARAMETER_SPECS

    def static_models(self) -> Sequence[BaseModelInfo]:
        return STATIC_MODELS

    def _acct(self, path: str) -> str:
        return f"/v1/accounts/{self.account}{path}"

    # ------------------------------------------------------------------ transport with retries

    async def _send(
        self, method: str, path: str, *, ok: tuple[int, ...] = (), request_timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One logical call: retries 408/429/5xx/connection errors/timeouts with backoff, honouring
        `retry-after`; maps the final failure to `ProviderError`. Statuses in `ok` are returned."""
        client = self._http()
        attempt = 0
        while True:
            error: ProviderError
            try:
                request = client.build_request(
                    method, path,
                    timeout=request_timeout if request_timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    **kwargs,
                )
                response = await client.send(request)
            except httpx.TimeoutException:
                error = ProviderError("Fireworks AI did not answer in time", provider=DISPLAY_NAME, status=504,
                                      retryable=True)
            except httpx.TransportError:
                error = ProviderError("Could not reach Fireworks AI", provider=DISPLAY_NAME, status=502,
                                      retryable=True)
            else:
                if response.status_code < 400 or response.status_code in ok:
                    return response
                error = map_fireworks_response(response)
                if not error.retryable:
                    raise error
            if attempt >= self._max_retries:
                raise error
            delay = self._delay(attempt, error.retry_after)
            attempt += 1
            log.info("Fireworks %s %s failed (%s); retry %d in %.3fs", method, path, error.status, attempt, delay)
            await asyncio.sleep(delay)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        return self._body(response)

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ProviderError("Fireworks AI sent a malformed response", provider=DISPLAY_NAME, status=502,
                                retryable=True) from None
        if not isinstance(body, dict):
            raise ProviderError("Fireworks AI sent an unexpected response", provider=DISPLAY_NAME, status=502)
        return body

    # ------------------------------------------------------------------ models

    async def list_models(self) -> list[BaseModelInfo]:
        """Tunable base models from `accounts/fireworks/models` (the caller falls back to `static_models`)."""
        models: list[BaseModelInfo] = []
        token: str | None = None
        for _ in range(20):
            params: dict[str, Any] = {"pageSize": 200}
            if token:
                params["pageToken"] = token
            body = await self._json("GET", f"/v1/accounts/{BASE_ACCOUNT}/models", params=params)
            for item in body.get("models") or []:
                if not isinstance(item, dict) or not item.get("tunable", False):
                    continue
                name = str(item.get("name", ""))
                context = item.get("contextLength")
                models.append(BaseModelInfo(
                    id=name, name=str(item.get("displayName") or _last_segment(name)),
                    context_length=int(context) if isinstance(context, int | str) and str(context).isdigit() else None,
                    supports_lora=bool(item.get("supportsLora", True)), supports_full=False,
                    training_methods=("sft",),
                ))
            token = body.get("nextPageToken") or None
            if not token:
                break
        return models

    def _model_name(self, model: str) -> str:
        return model if model.startswith("accounts/") else f"accounts/{BASE_ACCOUNT}/models/{model}"

    def _dataset_name(self, dataset: str) -> str:
        return dataset if dataset.startswith("accounts/") else self._acct(f"/datasets/{dataset}")[len("/v1/"):]

    # ------------------------------------------------------------------ datasets

    async def upload_file(self, path: Path, filename: str) -> ProviderFile:
        content = await asyncio.to_thread(path.read_bytes)
        if len(content) > MAX_DIRECT_UPLOAD_BYTES:
            raise ProviderError("Training file exceeds Fireworks AI's 150 MB direct upload limit",
                                provider=DISPLAY_NAME, status=413)
        fmt, count = _detect_format(content)
        dataset_id = dataset_id_for(content)
        created = await self._send("POST", self._acct("/datasets"), ok=(409,), json={
            "datasetId": dataset_id,
            "dataset": {"userUploaded": {}, "exampleCount": str(count), "displayName": filename[:200],
                        "format": fmt},
        })
        if created.status_code == 409:
            existing = await self._json("GET", self._acct(f"/datasets/{dataset_id}"))
            if existing.get("state") == "READY":
                return ProviderFile(id=dataset_id, filename=filename, bytes=len(content))
        await self._send(
            "POST", self._acct(f"/datasets/{dataset_id}:upload"), request_timeout=self._upload_timeout,
            files={"file": (filename, content, "application/jsonl")},
        )
        for _ in range(self._dataset_ready_polls):
            dataset = await self._json("GET", self._acct(f"/datasets/{dataset_id}"))
            if dataset.get("state") == "READY":
                break
            await asyncio.sleep(self._poll_interval)
        return ProviderFile(id=dataset_id, filename=filename, bytes=len(content))

    # ------------------------------------------------------------------ jobs

    def _job_body(self, request: CreateJobRequest) -> dict[str, Any]:
        params = validate_parameters(DISPLAY_NAME, PARAMETER_SPECS, request.parameters)
        body: dict[str, Any] = {"dataset": self._dataset_name(request.training_file_id)}
        model = self._model_name(request.model)
        if model.startswith(f"accounts/{BASE_ACCOUNT}/"):
            body["baseModel"] = model
        else:  # continue training one of our own LoRA models
            body["warmStartFrom"] = model
        output = params.pop("outputModel", None)
        if output is not None:
            if not _ID_OK.match(output):
                raise ProviderError("outputModel must be lowercase letters, digits and hyphens, starting with a "
                                    "letter (max 63)", provider=DISPLAY_NAME, status=422)
            body["outputModel"] = output
        body.update(params)
        if request.validation_file_id:
            body["evaluationDataset"] = self._dataset_name(request.validation_file_id)
        body["displayName"] = (request.suffix or request.client_reference)[:100]
        return body

    async def create_job(self, request: CreateJobRequest) -> ProviderJob:
        job_id = job_id_for(request.client_reference)
        response = await self._send(
            "POST", self._acct("/supervisedFineTuningJobs"), ok=(409,),
            params={"supervisedFineTuningJobId": job_id}, json=self._job_body(request),
        )
        if response.status_code == 409:
            # Ours already (a retry after a timeout, or a second create for the same reference) --
            # unless the conflict is about something else, such as an outputModel that is taken.
            log.info("Fireworks job %s already exists; returning it", job_id)
            try:
                return await self.get_job(job_id)
            except ProviderError as error:
                if error.status != 404:
                    raise
                raise map_fireworks_response(response) from None
        return self._to_job(self._body(response))

    async def find_job(self, client_reference: str) -> ProviderJob | None:
        try:
            return await self.get_job(job_id_for(client_reference))
        except ProviderError as error:
            if error.status == 404:
                return None
            raise

    async def _raw_job(self, job_id: str) -> dict[str, Any]:
        return await self._json("GET", self._acct(f"/supervisedFineTuningJobs/{_last_segment(job_id)}"))

    async def get_job(self, job_id: str) -> ProviderJob:
        return self._to_job(await self._raw_job(job_id))

    async def cancel_job(self, job_id: str) -> ProviderJob:
        await self._send("POST", self._acct(f"/supervisedFineTuningJobs/{_last_segment(job_id)}:cancel"), json={})
        return await self.get_job(job_id)

    async def list_jobs(self, page_size: int = 50, max_pages: int = 20) -> list[ProviderJob]:
        jobs: list[ProviderJob] = []
        token: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"pageSize": page_size}
            if token:
                params["pageToken"] = token
            body = await self._json("GET", self._acct("/supervisedFineTuningJobs"), params=params)
            jobs.extend(self._to_job(j) for j in body.get("supervisedFineTuningJobs") or [] if isinstance(j, dict))
            token = body.get("nextPageToken") or None
            if not token:
                break
        return jobs

    async def list_events(self, job_id: str) -> list[ProviderEvent]:
        """Fireworks has no event log for SFT jobs: synthesise one from the job's timestamps and state."""
        raw = await self._raw_job(job_id)
        job = self._to_job(raw)
        short = _last_segment(str(raw.get("name", job_id)))
        events = []
        if job.created_at is not None:
            events.append(ProviderEvent(id=f"{short}-created", created_at=job.created_at,
                                        message=f"Job created from dataset {raw.get('dataset', '?')}"))
        updated = _parse_time(raw.get("updateTime"))
        if not job.status.finished and updated is not None:
            events.append(ProviderEvent(id=f"{short}-{job.raw_status.lower()}", created_at=updated,
                                        message=f"Job is {job.raw_status.removeprefix('JOB_STATE_').lower()}"
                                        + (f" ({job.progress:.0f}%)" if job.progress else "")))
        if job.status.finished:
            when = job.finished_at or updated or job.created_at
            if when is not None:
                if job.status is JobStatus.SUCCEEDED:
                    events.append(ProviderEvent(id=f"{short}-completed", created_at=when,
                                                message=f"Job completed; output model {job.fine_tuned_model}"))
                elif job.status is JobStatus.FAILED:
                    events.append(ProviderEvent(id=f"{short}-failed", created_at=when, level="error",
                                                message=f"Job failed: {job.error or job.raw_status}"))
                else:
                    events.append(ProviderEvent(id=f"{short}-cancelled", created_at=when, message="Job cancelled"))
        return events

    async def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        """Fireworks exposes the final LoRA model only."""
        job = await self.get_job(job_id)
        if job.status is not JobStatus.SUCCEEDED or not job.fine_tuned_model:
            return []
        return [ProviderCheckpoint(id=_last_segment(job.fine_tuned_model), step=None,
                                   created_at=job.finished_at, model=job.fine_tuned_model,
                                   metrics=dict(job.metrics))]

    def _to_job(self, raw: dict[str, Any]) -> ProviderJob:
        state = str(raw.get("state") or "JOB_STATE_UNSPECIFIED")
        status = _STATES.get(state, JobStatus.RUNNING)
        progress_raw: dict[str, Any] = raw["jobProgress"] if isinstance(raw.get("jobProgress"), dict) else {}
        metrics: dict[str, Any] = {}
        for key in ("epoch", "trainLoss", "evalLoss", "inputTokens"):
            if key in progress_raw and progress_raw[key] is not None:
                metrics[key] = progress_raw[key]
        trained: int | None = None
        if str(metrics.get("inputTokens", "")).isdigit():
            trained = int(metrics["inputTokens"])
            metrics["inputTokens"] = trained
        progress: float | None = None
        if isinstance(progress_raw.get("percent"), int | float):
            progress = float(progress_raw["percent"])
        if status is JobStatus.SUCCEEDED:
            progress = 100.0
        job_status: dict[str, Any] = raw["status"] if isinstance(raw.get("status"), dict) else {}
        error = None
        if status is JobStatus.FAILED:
            error = str(job_status.get("message") or job_status.get("code") or state)
        output = raw.get("outputModel")
        return ProviderJob(
            id=_last_segment(str(raw.get("name", ""))), status=status, raw_status=state,
            model=str(raw.get("baseModel") or raw.get("warmStartFrom") or ""),
            fine_tuned_model=str(output) if output and status is JobStatus.SUCCEEDED else None,
            progress=progress, metrics=metrics, error=error, created_at=_parse_time(raw.get("createTime")),
            finished_at=_parse_time(raw.get("completedTime")) if status.finished else None,
            trained_tokens=trained if status is JobStatus.SUCCEEDED else None,
        )

    # ------------------------------------------------------------------ inference

    def _inference_body(self, body: dict[str, Any]) -> dict[str, Any]:
        request = dict(body)
        model = request.get("model")
        if isinstance(model, str) and "/" not in model:
            request["model"] = self._model_name(model)
        return request

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        request = self._inference_body(body)
        request.pop("stream", None)
        return await self._json("POST", "/inference/v1/chat/completions", json=request)

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Opens the upstream stream now (its errors raise here); the iterator yields chunk dicts."""
        return await self._streams().open(dict(self._inference_body(body), stream=True))

    def _streams(self) -> ChatStreamOpener:
        if self._opener is None:
            self._http()  # refuses with a clear error when the account is not configured
            self._opener = ChatStreamOpener(
                provider=DISPLAY_NAME, url=f"{self.base_url}/inference/v1/chat/completions",
                api_key=self._credentials.api_key or "", timeout=self._timeout,
                max_retries=self._max_retries, map_status=map_fireworks_status, delay=self._delay,
            )
        return self._opener

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/inference/v1/embeddings", json=self._inference_body(body))
