"""Bodies of the `/v1` image and audio routes (OpenAI's contract)."""

from __future__ import annotations

import msgspec


class ImageGenerationRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """OpenAI's `POST /v1/images/generations` body. `model` is `provider/model` (openai/dall-e-3,
    together/black-forest-labs/FLUX.1-schnell, sandbox/sandbox-image) or an alias."""

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    output_format: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    stream: bool | None = None
    partial_images: int | None = None


class ImageData(msgspec.Struct, omit_defaults=True):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(msgspec.Struct):
    created: int
    data: list[ImageData]
    model: str
    provider: str
    output_format: str = "png"
    size: str | None = None
