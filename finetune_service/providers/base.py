"""The protocol every fine-tuning provider implements, and the types it speaks.

Providers know nothing of HTTP handlers or the database: they take plain values and
return these dataclasses, raising `finetune_service.errors.ProviderError` on failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from finetune_service.providers.parameters import ParamSpec


class ProviderName(StrEnum):
    TOGETHER_AI = "TOGETHER_AI"
    FIREWORKS_AI = "FIREWORKS_AI"
    OPENAI = "OPENAI"
    SANDBOX = "SANDBOX"

    @property
    def prefix(self) -> str:
        """The model-name prefix that routes `/v1` requests to this provider."""
        return _PREFIXES[self]

    @classmethod
    def parse(cls, text: str) -> ProviderName | None:
        """Accept the enum value, its display-less lower form or the model prefix."""
        key = text.strip()
        for member in cls:
            if key.upper() == member.value or key.lower() == member.prefix:
                return member
        return None


_PREFIXES = {
    ProviderName.TOGETHER_AI: "together",
    ProviderName.FIREWORKS_AI: "fireworks",
    ProviderName.OPENAI: "openai",
    ProviderName.SANDBOX: "sandbox",
}


class JobStatus(StrEnum):
    CREATING = "creating"
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def rank(self) -> int:
        """Position in the life of a job; sync never moves a job to a lower rank."""
        return _RANK[self]


_RANK = {
    JobStatus.CREATING: 0,
    JobStatus.VALIDATING: 1,
    JobStatus.QUEUED: 2,
    JobStatus.RUNNING: 3,
    JobStatus.PAUSED: 3,
    JobStatus.CANCELLING: 4,
    JobStatus.SUCCEEDED: 5,
    JobStatus.FAILED: 5,
    JobStatus.CANCELLED: 5,
}


@dataclass(frozen=True)
class BaseModelInfo:
    id: str
    name: str
    context_length: int | None = None
    supports_lora: bool = True
    supports_full: bool = False
    training_methods: tuple[str, ...] = ("sft",)


@dataclass(frozen=True)
class ProviderFile:
    id: str
    filename: str
    bytes: int


@dataclass(frozen=True)
class CreateJobRequest:
    model: str
    training_file_id: str
    validation_file_id: str | None
    parameters: dict[str, Any]
    # Our job id; providers attach it (suffix, metadata, job id) so a job can be found
    # again after a crash or timeout instead of being created twice.
    client_reference: str
    suffix: str | None = None


@dataclass(frozen=True)
class ProviderJob:
    id: str
    status: JobStatus
    raw_status: str
    model: str
    fine_tuned_model: str | None = None
    progress: float | None = None  # 0..100
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trained_tokens: int | None = None


@dataclass(frozen=True)
class ProviderEvent:
    id: str
    created_at: datetime
    message: str
    level: str = "info"
    type: str = "message"


@dataclass(frozen=True)
class ProviderCheckpoint:
    id: str
    step: int | None
    created_at: datetime | None
    model: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FineTuneProvider(Protocol):
    """What the service needs of a provider. Chat/embedding bodies are OpenAI-shaped dicts."""

    name: ProviderName
    display_name: str

    @property
    def configured(self) -> bool: ...

    def parameter_specs(self) -> Sequence[ParamSpec]: ...

    def static_models(self) -> Sequence[BaseModelInfo]: ...

    async def list_models(self) -> list[BaseModelInfo]: ...

    async def upload_file(self, path: Path, filename: str) -> ProviderFile: ...

    async def create_job(self, request: CreateJobRequest) -> ProviderJob: ...

    async def find_job(self, client_reference: str) -> ProviderJob | None: ...

    async def get_job(self, job_id: str) -> ProviderJob: ...

    async def cancel_job(self, job_id: str) -> ProviderJob: ...

    async def list_events(self, job_id: str) -> list[ProviderEvent]: ...

    async def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]: ...

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Awaiting opens the upstream stream, so its errors raise here, before any byte
        reaches our client; the returned iterator yields chunk dicts and its `aclose()`
        closes the upstream connection."""
        ...

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class PausableJobs(Protocol):
    """Optional: providers that can pause a running fine-tune and resume it later (OpenAI)."""

    async def pause_job(self, job_id: str) -> ProviderJob: ...

    async def resume_job(self, job_id: str) -> ProviderJob: ...


# ---------------------------------------------------------------------------------- media (optional)


@dataclass(frozen=True)
class ImageRequest:
    model: str  # the provider's model id
    prompt: str
    n: int = 1
    width: int = 1024
    height: int = 1024
    size: str | None = None  # as the client sent it ("1024x1024"), for providers that take the string
    quality: str | None = None
    style: str | None = None


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    media_type: str = "image/png"
    revised_prompt: str | None = None


@runtime_checkable
class ImageGenerator(Protocol):
    """Optional: providers that draw images from a prompt."""

    async def generate_image(self, request: ImageRequest) -> list[GeneratedImage]: ...


@dataclass(frozen=True)
class AudioRequest:
    model: str  # the provider's model id
    filename: str
    data: bytes
    media_type: str
    prompt: str | None = None
    language: str | None = None
    response_format: str = "json"
    temperature: float | None = None


@runtime_checkable
class SpeechToText(Protocol):
    """Optional: providers with speech models. Answers are OpenAI-shaped: a dict for json /
    verbose_json, plain text for text / srt / vtt."""

    async def transcribe(self, request: AudioRequest) -> dict[str, Any] | str: ...

    async def translate(self, request: AudioRequest) -> dict[str, Any] | str: ...
