"""OpenAI-compatible request bodies (`/v1/chat/completions`, `/v1/embeddings`), the model list,
saved responses and the job test body.

Chat and embedding *responses* are the provider's OpenAI-shaped dicts, passed through
(with `model` set to the name the client asked for).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """OpenAI's chat completion body. Unknown fields are rejected (as OpenAI does), except
    `save_response`, our one extension: true keeps the conversation and the answer."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    save_response: bool = False


class EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """OpenAI's embeddings body. `input`: a string, a list of strings, or token arrays."""

    model: str
    input: Any
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


class ModelObject(msgspec.Struct):
    """OpenAI's model object plus where the model comes from (`kind`: base, fine_tuned, alias)."""

    id: str
    owned_by: str
    kind: str
    provider: str
    object: str = "model"
    created: int = 0
    alias_of: str | None = None
    job_id: str | None = None


class ModelList(msgspec.Struct):
    data: list[ModelObject]
    object: str = "list"


class SavedResponseView(msgspec.Struct):
    id: str
    model: str
    provider: str
    messages: list[dict[str, Any]]
    choices: list[dict[str, Any]]
    usage: dict[str, Any]
    parameters: dict[str, Any]
    stream: bool
    created_at: datetime


class SavedResponseList(msgspec.Struct):
    saved_responses: list[SavedResponseView]
    has_more: bool
    next_cursor: str | None


class JobTestBody(msgspec.Struct, forbid_unknown_fields=True):
    """Ask a job's fine-tuned model something: `messages` (OpenAI shape) or a single `prompt`."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
