"""Together AI, through the official `together` SDK (>=3.1.1,<4; contract in PROVIDERS.md §1).

Notes on the choices made here:
- Control-plane and inference calls use `AsyncTogether`, except streamed chat completions: they
  are opened with one aiohttp request and relayed as sent (`providers/chat_streams.py`), as for
  OpenAI and Fireworks.
- The SDK's `files.upload` hashes and reads the file with blocking I/O even in the async client,
  so uploads run the *sync* client in a worker thread instead (same SDK code path, including its
  409 "already exists" handling).
- `fine_tuning.create` is not idempotent. Its internal limits lookup is done first with
  retries, then the create itself runs with `max_retries=0`: a timeout must not silently
  launch a second paid job. The suffix carries a token derived from `client_reference`, so
  `find_job` can look the job up after a crash or timeout before anyone retries.
- Responses are read as wire dicts (`to_dict()`), not SDK attributes: 3.x names the same
  field `output_name` on create and `x_model_output_name` on retrieve (PROVIDERS.md §1.1).
- The API key never reaches a message: a 401 becomes a fixed sentence, and every message is
  scrubbed of the key anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pydantic
import together
from together import AsyncTogether, Together

from finetune_service.errors import DomainError, ProviderError
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
from finetune_service.providers.upstream_http import redact, retry_after
from finetune_service.settings import ProviderCredentials

log = logging.getLogger(__name__)

DISPLAY_NAME = "Together AI"
UPLOAD_TIMEOUT_SECONDS = 600.0
MAX_SUFFIX_LENGTH = 40  # SDK docstring: "Up to 40 character suffix"
_REFERENCE_TOKEN_LENGTH = 13  # "r" + 12 hex digits

# Together status -> ours (PROVIDERS.md §1.6). Unknown future statuses count as running.
STATUS_MAP: dict[str, JobStatus] = {
    "pending": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "compressing": JobStatus.RUNNING,
    "uploading": JobStatus.RUNNING,
    "cancel_requested": JobStatus.CANCELLING,
    "cancelled": JobStatus.CANCELLED,
    "error": JobStatus.FAILED,
    "user_error": JobStatus.FAILED,
    "completed": JobStatus.SUCCEEDED,
}

# Fine-tunable models as listed on docs.together.ai/docs/fine-tuning-models (2026-11). The
# live list (`list_models`) wins; this one is the offline fallback and the catalog's labels.
# context_length is the model's context window; per-job training limits come from
# GET /v1/fine-tunes/models/limits.
_STATIC_MODELS: tuple[BaseModelInfo, ...] = tuple(
    BaseModelInfo(id=model_id, name=name, context_length=ctx, supports_lora=True, supports_full=full,
                  training_methods=("sft", "dpo"))
    for model_id, name, ctx, full in [
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Llama 3.1 8B Instruct", 131072, True),
        ("meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", "Llama 3.1 70B Instruct", 131072, True),
        ("meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct", 131072, True),
        ("meta-llama/Llama-3.2-3B-Instruct", "Llama 3.2 3B Instruct", 131072, True),
        ("meta-llama/Llama-3.3-70B-Instruct-Reference", "Llama 3.3 70B Instruct", 131072, True),
        ("Qwen/Qwen3-8B", "Qwen3 8B", 32768, True),
        ("Qwen/Qwen3-14B", "Qwen3 14B", 32768, True),
        ("Qwen/Qwen3-32B", "Qwen3 32B", 32768, True),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct", 32768, True),
        ("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5 72B Instruct", 32768, True),
        ("mistralai/Mistral-7B-Instruct-v0.2", "Mistral 7B Instruct v0.2", 32768, True),
        ("google/gemma-3-12b-it", "Gemma 3 12B Instruct", 131072, True),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "DeepSeek R1 Distill Llama 70B", 131072, True),
    ]
)

_DPO_ONLY = "DPO only (training_method='dpo')."
# The SDK's own `fine_tuning.create` keyword names; defaults are the SDK's defaults.
_PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("n_epochs", "integer", "Number of passes over the training file.", 1, minimum=1, maximum=20),
    ParamSpec("learning_rate", "number", "Peak learning rate.", 1e-5, minimum=0, maximum=1.0,
              exclusive_minimum=True),
    ParamSpec("batch_size", "integer", "Packed batch size; 'max' uses the largest the model allows "
              "(model limits apply).", "max", minimum=1, also_accepts=("max",)),
    ParamSpec("lora", "boolean", "Train LoRA adapters (true) or all weights (false, full fine-tune).", True),
    ParamSpec("lora_r", "integer", "LoRA rank; default is the model's default rank.", minimum=1, maximum=64),
    ParamSpec("lora_alpha", "number", "LoRA alpha; default is twice the rank.", minimum=0,
              exclusive_minimum=True),
    ParamSpec("lora_dropout", "number", "LoRA dropout, in [0, 1).", 0.0, minimum=0, maximum=0.999),
    ParamSpec("lora_trainable_modules", "string", "Modules that get adapters: 'all-linear' or a "
              "comma-separated list such as 'q_proj,v_proj'.", "all-linear"),
    ParamSpec("warmup_ratio", "number", "Fraction of steps used for learning-rate warmup.", 0.0,
              minimum=0, maximum=1),
    ParamSpec("max_grad_norm", "number", "Gradient clipping norm; 0 disables clipping.", 1.0, minimum=0),
    ParamSpec("weight_decay", "number", "Weight decay.", 0.0, minimum=0),
    ParamSpec("lr_scheduler_type", "enum", "Learning-rate schedule.", "cosine", choices=("linear", "cosine")),
    ParamSpec("min_lr_ratio", "number", "Final learning rate as a fraction of the peak.", 0.0,
              minimum=0, maximum=1),
    ParamSpec("scheduler_num_cycles", "number", "Number (or fraction) of cosine cycles.", 0.5, minimum=0,
              exclusive_minimum=True),
    ParamSpec("n_checkpoints", "integer", "Checkpoints saved during training.", 1, minimum=1, maximum=20),
    ParamSpec("n_evals", "integer", "Evaluations on the validation file during training.", 0,
              minimum=0, maximum=100),
    ParamSpec("train_on_inputs", "boolean", "Also train on user/prompt tokens; 'auto' masks them for "
              "messages and prompt/completion data. SFT only.", also_accepts=("auto",)),
    ParamSpec("suffix", "string", f"Added to the output model name (letters, digits, '-'; we append a "
              f"{_REFERENCE_TOKEN_LENGTH + 1}-character job reference, total at most {MAX_SUFFIX_LENGTH})."),
    ParamSpec("training_method", "enum", "Supervised fine-tuning or direct preference optimisation.", "sft",
              choices=("sft", "dpo")),
    ParamSpec("dpo_beta", "number", f"DPO beta. {_DPO_ONLY}", minimum=0, exclusive_minimum=True),
    ParamSpec("dpo_normalize_logratios_by_length", "boolean", f"Normalise log-ratios by length. {_DPO_ONLY}"),
    ParamSpec("rpo_alpha", "number", f"RPO alpha: weight of the NLL term. {_DPO_ONLY}", minimum=0),
    ParamSpec("simpo_gamma", "number", f"SimPO gamma; > 0 enables reference-free SimPO. {_DPO_ONLY}",
              minimum=0),
    ParamSpec("max_seq_length", "integer", "Maximum sequence length (model limits apply).", minimum=512),
    ParamSpec("packing", "boolean", "Pack several examples into one sequence.", True),
    ParamSpec("gradient_accumulation_steps", "integer", "Gradient accumulation steps.", minimum=1),
    ParamSpec("random_seed", "integer", "Seed for shuffling and initialisation (server default 42).", minimum=0),
)

_FAILED_EVENT_TYPES = {"job_error", "job_user_error"}


def reference_token(client_reference: str) -> str:
    """A short, suffix-safe token that identifies our job in Together's job list."""
    return "r" + hashlib.sha256(client_reference.encode()).hexdigest()[: _REFERENCE_TOKEN_LENGTH - 1]


def build_suffix(user_suffix: str | None, client_reference: str) -> str:
    token = reference_token(client_reference)
    room = MAX_SUFFIX_LENGTH - len(token) - 1
    user = re.sub(r"[^A-Za-z0-9-]+", "-", user_suffix or "").strip("-")[:room].strip("-")
    return f"{user}-{token}" if user else token


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).astimezone()
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _wire(obj: Any) -> dict[str, Any]:
    """The response as it came over the wire (API field names, JSON types)."""
    if isinstance(obj, dict):
        return obj
    data = obj.to_dict(mode="json")
    return data if isinstance(data, dict) else {}


def _provider_message(exc: together.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


class TogetherProvider:
    name = ProviderName.TOGETHER_AI
    display_name = DISPLAY_NAME

    def __init__(self, credentials: ProviderCredentials, *, timeout: float = 30.0, max_retries: int = 2) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._max_retries = max_retries
        base_url = credentials.base_url
        if base_url:
            # 3.x adds `/v1` itself; a 2.x-style base URL ending in /v1 would give /v1/v1/... (§1.1).
            base_url = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
        self._base_url = base_url or None
        self._async: AsyncTogether | None = None
        self._sync: Together | None = None
        self._opener: ChatStreamOpener | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def configured(self) -> bool:
        return bool(self._credentials.api_key)

    def _client(self) -> AsyncTogether:
        if not self._credentials.api_key:
            raise ProviderError("Together AI is not configured: set TOGETHER_API_KEY", provider=self.name,
                                status=503)
        if self._async is None:
            self._async = AsyncTogether(api_key=self._credentials.api_key, base_url=self._base_url,
                                        timeout=self._timeout, max_retries=self._max_retries)
        return self._async

    def _sync_client(self) -> Together:
        if not self._credentials.api_key:
            raise ProviderError("Together AI is not configured: set TOGETHER_API_KEY", provider=self.name,
                                status=503)
        if self._sync is None:
            self._sync = Together(
                api_key=self._credentials.api_key, base_url=self._base_url, max_retries=self._max_retries,
                timeout=httpx.Timeout(max(self._timeout, UPLOAD_TIMEOUT_SECONDS), connect=self._timeout),
            )
        return self._sync

    def _scrub(self, text: str) -> str:
        return redact(text, self._credentials.api_key)

    def _status_error(self, status: int, message: str, asked_wait: float | None) -> ProviderError:
        """Our `ProviderError` for an HTTP error answer from Together AI (SDK call or opened stream)."""
        provider, message = self.name, self._scrub(message)
        if status == 401:
            return ProviderError("Together AI rejected the configured API key", provider=provider, status=502)
        if status == 429:
            return ProviderError(f"Together AI rate limit: {message}", provider=provider, status=429,
                                 retry_after=asked_wait, retryable=True)
        if status == 408 or status >= 500:
            return ProviderError(f"Together AI is unavailable (HTTP {status}): {message}", provider=provider,
                                 status=504 if status in (408, 504) else 502, retry_after=asked_wait,
                                 retryable=True)
        if status == 402:
            return ProviderError(f"Together AI refused the request for billing reasons: {message}",
                                 provider=provider, status=502)
        if status in (403, 404, 409):
            return ProviderError(f"Together AI: {message}", provider=provider, status=status)
        return ProviderError(f"Together AI: {message}", provider=provider, status=422)

    def _error(self, exc: Exception) -> ProviderError:
        """One place that turns SDK failures into `ProviderError`s."""
        provider = self.name
        if isinstance(exc, together.APITimeoutError):
            return ProviderError(f"Together AI did not answer within {self._timeout:g} s", provider=provider,
                                 status=504, retryable=True)
        if isinstance(exc, together.APIConnectionError):
            return ProviderError("Could not reach Together AI", provider=provider, status=502, retryable=True)
        if isinstance(exc, together.APIStatusError):
            return self._status_error(exc.status_code, _provider_message(exc), retry_after(exc.response.headers))
        if isinstance(exc, together.APIError | json.JSONDecodeError | pydantic.ValidationError | httpx.HTTPError):
            return ProviderError("Together AI sent a response we could not read", provider=provider, status=502,
                                 retryable=True)
        if isinstance(exc, ValueError | together.TogetherError):
            # The SDK validates arguments locally (batch size vs. limits, DPO-only options, ...).
            return ProviderError(f"Together AI: {self._scrub(str(exc))}", provider=provider, status=422)
        log.exception("unexpected error from the Together SDK")
        return ProviderError("Unexpected error talking to Together AI", provider=provider, status=502)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DomainError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        client, sync, self._async, self._sync = self._async, self._sync, None, None
        opener, self._opener = self._opener, None
        if opener is not None:
            await opener.aclose()
        if client is not None:
            await client.close()
        if sync is not None:
            await asyncio.to_thread(sync.close)

    # ------------------------------------------------------------------ catalog

    def parameter_specs(self) -> Sequence[ParamSpec]:
        return _PARAM_SPECS

    def static_models(self) -> Sequence[BaseModelInfo]:
        return _STATIC_MODELS

    async def list_models(self) -> list[BaseModelInfo]:
        """The live fine-tunable list (GET /v1/fine-tunes/models/supported; no SDK method for it)."""
        with self._errors():
            data = await self._client().get("/v1/fine-tunes/models/supported", cast_to=object)
        names = data.get("models") if isinstance(data, dict) else None
        if not isinstance(names, list):
            raise ProviderError("Together AI sent an unexpected model list", provider=self.name, retryable=True)
        known = {m.id: m for m in _STATIC_MODELS}
        return [
            known.get(n) or BaseModelInfo(id=n, name=n.rsplit("/", 1)[-1], training_methods=("sft", "dpo"))
            for n in names if isinstance(n, str) and n
        ]

    # ------------------------------------------------------------------ files

    async def upload_file(self, path: Path, filename: str) -> ProviderFile:
        """Upload a training file (purpose fine-tune). The SDK picks the type from the extension."""
        name = Path(filename).name or path.name
        if Path(name).suffix.lower() not in (".jsonl", ".parquet", ".csv"):
            name += ".jsonl"
        client = self._sync_client()

        def upload() -> Any:
            with tempfile.TemporaryDirectory(prefix="together-upload-") as tmp:
                target = path
                if path.name != name:
                    target = Path(tmp) / name
                    try:
                        os.symlink(path.resolve(), target)
                    except OSError:
                        shutil.copyfile(path, target)
                # check=False: the SDK's local check is thin (§1.4); we validate datasets ourselves
                # and Together validates again server-side (reported below).
                return client.files.upload(target, purpose="fine-tune", check=False)

        with self._errors():
            uploaded = _wire(await asyncio.to_thread(upload))
            if uploaded.get("processing_status") in ("INVALID_FORMAT", "FAILED"):
                report = _wire(await self._client().files.retrieve(uploaded["id"])).get("validation_report") or {}
                detail = report.get("message") or "the file failed validation"
                raise ProviderError(f"Together AI rejected the training file: {self._scrub(str(detail))}",
                                    provider=self.name, status=422)
        return ProviderFile(id=uploaded["id"], filename=uploaded.get("filename") or name,
                            bytes=int(uploaded.get("bytes") or 0))

    # ------------------------------------------------------------------ jobs

    async def create_job(self, request: CreateJobRequest) -> ProviderJob:
        params = validate_parameters(DISPLAY_NAME, _PARAM_SPECS, request.parameters)
        user_suffix = request.suffix or params.pop("suffix", None)
        params.pop("suffix", None)
        kwargs = {k: v for k, v in params.items() if v is not None}
        if kwargs.get("training_method", "sft") == "sft":
            kwargs.setdefault("train_on_inputs", "auto")  # the SDK's default, without its warning
        client = self._client()
        with self._errors():
            limits = await client.fine_tuning.model_limits(model_name=request.model)
            created = await client.with_options(max_retries=0).fine_tuning.create(
                training_file=request.training_file_id,
                model=request.model,
                validation_file=request.validation_file_id or "",
                suffix=build_suffix(user_suffix, request.client_reference),
                model_limits=limits,
                **kwargs,
            )
        return self._job(_wire(created))

    async def find_job(self, client_reference: str) -> ProviderJob | None:
        token = reference_token(client_reference)
        with self._errors():
            listing = _wire(await self._client().fine_tuning.list())
        matches = [
            job for job in listing.get("data") or []
            if isinstance(job, dict) and (
                str(job.get("suffix") or "").endswith(token) or token in str(job.get("model_output_name") or "")
            )
        ]
        if not matches:
            return None
        newest = max(matches, key=lambda j: str(j.get("created_at") or ""))
        return await self.get_job(str(newest["id"]))

    async def get_job(self, job_id: str) -> ProviderJob:
        client = self._client()
        with self._errors():
            wire = _wire(await client.fine_tuning.retrieve(job_id))
        metrics: dict[str, Any] = {}
        if wire.get("steps_completed") or wire.get("status") in ("running", "compressing", "uploading", "completed"):
            metrics = await self._latest_metrics(job_id)
        return self._job(wire, metrics)

    async def _latest_metrics(self, job_id: str) -> dict[str, Any]:
        """Best effort: the last training-metrics snapshot, keys like `train_loss`."""
        try:
            snapshots = _wire(await self._client().fine_tuning.list_metrics(job_id)).get("metrics") or []
        except (together.APIError, ValueError) as exc:
            log.debug("Together AI metrics unavailable for %s: %s", job_id, type(exc).__name__)
            return {}
        if not snapshots or not isinstance(snapshots[-1], dict):
            return {}
        return {key.replace("/", "_"): value for key, value in snapshots[-1].items()}

    async def cancel_job(self, job_id: str) -> ProviderJob:
        with self._errors():
            return self._job(_wire(await self._client().fine_tuning.cancel(job_id)))

    async def list_events(self, job_id: str) -> list[ProviderEvent]:
        with self._errors():
            data = _wire(await self._client().fine_tuning.list_events(job_id)).get("data") or []
        events = []
        for index, event in enumerate(data):
            created = _parse_time(event.get("created_at"))
            if created is None:
                continue
            events.append(ProviderEvent(
                id=str(event.get("hash") or f"{job_id}:{index}"), created_at=created,
                message=str(event.get("message") or ""), level=str(event.get("level") or "info"),
                type=str(event.get("type") or "message"),
            ))
        return events

    async def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        with self._errors():
            data = _wire(await self._client().fine_tuning.list_checkpoints(job_id)).get("data") or []
        checkpoints = []
        for item in data:
            step = item.get("step")
            checkpoints.append(ProviderCheckpoint(
                # `{job_id}:{step}` is what Together accepts as `from_checkpoint`.
                id=f"{job_id}:{step}" if step is not None else str(item.get("path")),
                step=step, created_at=_parse_time(item.get("created_at")),
                model=item.get("object_name") or item.get("path"),
                metrics={"checkpoint_type": item.get("checkpoint_type")} if item.get("checkpoint_type") else {},
            ))
        return checkpoints

    def _job(self, wire: dict[str, Any], metrics: dict[str, Any] | None = None) -> ProviderJob:
        raw = str(wire.get("status") or "pending")
        status = STATUS_MAP.get(raw, JobStatus.RUNNING)
        steps, total = wire.get("steps_completed"), wire.get("total_steps")
        progress: float | None = None
        if status is JobStatus.SUCCEEDED:
            progress = 100.0
        elif isinstance(steps, int | float) and isinstance(total, int | float) and total > 0:
            progress = round(min(100.0, 100.0 * steps / total), 2)
        error = None
        if status is JobStatus.FAILED:
            failures = [
                e for e in wire.get("events") or []
                if isinstance(e, dict) and (e.get("type") in _FAILED_EVENT_TYPES or e.get("level") == "error")
            ]
            error = str(failures[-1].get("message")) if failures else f"Together AI reported the job as {raw}"
        finished = status.finished
        return ProviderJob(
            id=str(wire["id"]),
            status=status,
            raw_status=raw,
            model=str(wire.get("model") or ""),
            fine_tuned_model=(wire.get("model_output_name") or None) if status is JobStatus.SUCCEEDED else None,
            progress=progress,
            metrics=metrics or {},
            error=error,
            created_at=_parse_time(wire.get("created_at")),
            started_at=_parse_time(wire.get("started_at")),
            finished_at=_parse_time(wire.get("updated_at")) if finished else None,
            trained_tokens=wire.get("token_count") if status is JobStatus.SUCCEEDED else None,
        )

    # ------------------------------------------------------------------ inference

    def _chat_args(self, body: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list):
            raise ProviderError("A chat completion needs `model` and a list of `messages`", provider=self.name,
                                status=422)
        extra = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        return model, messages, extra

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        model, messages, extra = self._chat_args(body)
        with self._errors():
            completion = await self._client().chat.completions.create(
                model=model, messages=messages, extra_body=extra or None
            )
            return _wire(completion)

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Opens the upstream stream now (HTTP errors raise here, before anything reaches our
        client); the returned iterator yields the chunk dicts as sent, `aclose()` closes it."""
        self._chat_args(body)  # refuses a body without `model` and `messages`, as the plain call does
        return await self._streams().open(dict(body, stream=True))

    def _streams(self) -> ChatStreamOpener:
        if self._opener is None:
            client = self._client()  # refuses with a clear error when no key is configured
            self._opener = ChatStreamOpener(
                provider=DISPLAY_NAME, url=f"{str(client.base_url).rstrip('/')}/v1/chat/completions",
                api_key=client.api_key, timeout=self._timeout,
                max_retries=self._max_retries, map_status=self._status_error,
            )
        return self._opener

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        model, inputs = body.get("model"), body.get("input")
        if not isinstance(model, str) or not isinstance(inputs, str | list):
            raise ProviderError("Embeddings need `model` and `input`", provider=self.name, status=422)
        extra = {k: v for k, v in body.items() if k not in ("model", "input")}
        with self._errors():
            return _wire(await self._client().embeddings.create(model=model, input=inputs, extra_body=extra or None))

    # ------------------------------------------------------------------ images and audio

    async def generate_image(self, request: ImageRequest) -> list[GeneratedImage]:
        """`images.generate` as base64 PNGs, so the service stores the images itself."""
        with self._errors():
            response = _wire(await self._client().images.generate(
                model=request.model, prompt=request.prompt, n=request.n, width=request.width,
                height=request.height, response_format="base64", output_format="png",
            ))
        images = []
        for item in response.get("data") or []:
            encoded = item.get("b64_json") if isinstance(item, dict) else None
            if not encoded:
                raise ProviderError("Together AI answered without image data", provider=self.name, status=502)
            images.append(GeneratedImage(data=base64.b64decode(encoded), media_type="image/png"))
        return images

    async def _audio(self, resource: Any, request: AudioRequest) -> dict[str, Any] | str:
        if request.response_format not in ("json", "verbose_json"):
            raise ProviderError(f"Together AI answers audio as json or verbose_json, not "
                                f"{request.response_format!r}", provider=self.name, status=422)
        kwargs: dict[str, Any] = {"model": request.model, "response_format": request.response_format,
                                  "file": (request.filename, request.data, request.media_type)}
        for name in ("prompt", "language", "temperature"):
            if getattr(request, name) is not None:
                kwargs[name] = getattr(request, name)
        with self._errors():
            return _wire(await resource.create(**kwargs))

    async def transcribe(self, request: AudioRequest) -> dict[str, Any] | str:
        return await self._audio(self._client().audio.transcriptions, request)

    async def translate(self, request: AudioRequest) -> dict[str, Any] | str:
        return await self._audio(self._client().audio.translations, request)
