"""Images and audio on `/v1` (OpenAI's contract), and the signed image links under `/media`.

`POST /v1/images/generations` answers signed `url`s (valid an hour, no key needed, like OpenAI's)
or `b64_json`; `/v1/images/files/{name}` serves a tenant its own images with the API key.
`POST /v1/audio/transcriptions` and `/v1/audio/translations` take OpenAI's multipart form.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from finetune_service.auth import Principal
from finetune_service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from finetune_service.schemas.media import ImageGenerationRequest, ImagesResponse
from finetune_service.services.completions import decode_body
from finetune_service.services.media import AudioUpload, MediaService

READ_CHUNK = 1 << 20
_TEXT_FIELDS = ("model", "prompt", "language", "response_format", "temperature")


def _base(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


async def _audio_form(request: Request[Any, Any, Any], limit: int) -> AudioUpload:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType("Send multipart/form-data with the audio in a field named 'file' and a 'model'.",
                                   param="file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + (1 << 20):
        raise PayloadTooLarge(f"Audio files are limited to {limit} bytes; this request is {declared}.", param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("Missing required parameter: 'file' (the audio, as a multipart file).", param="file")
    values: dict[str, str | None] = {}
    for name in _TEXT_FIELDS:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a plain form field, not a file.", param=name)
        values[name] = value or None
    try:
        data = bytearray()
        while piece := await upload.read(READ_CHUNK):
            data.extend(piece)
            if len(data) > limit:
                raise PayloadTooLarge(f"Audio files are limited to {limit} bytes.", param="file")
    finally:
        await upload.close()
    temperature = None
    if values["temperature"] is not None:
        try:
            temperature = float(values["temperature"])
        except ValueError:
            raise BadRequest(f"'temperature' must be a number, got {values['temperature']!r}.",
                             param="temperature") from None
    return AudioUpload(model=values["model"], filename=upload.filename or "audio", data=bytes(data),
                       media_type=upload.content_type or None, prompt=values["prompt"], language=values["language"],
                       response_format=values["response_format"], temperature=temperature)


def _audio_response(result: dict[str, Any] | str) -> Response[Any]:
    if isinstance(result, str):
        return Response(result, media_type=MediaType.TEXT)
    return Response(result, media_type=MediaType.JSON)


class OpenAIMediaController(Controller):
    path = "/v1"
    tags = ["openai-compatible"]

    @post("/images/generations", status_code=200, summary="Generate images (OpenAI-compatible)",
          description="`model`: openai/dall-e-3, openai/gpt-image-1, together/black-forest-labs/FLUX.1-schnell, "
                      "sandbox/sandbox-image (default; a deterministic, clearly labelled offline drawing).")
    async def generate(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        media: NamedDependency[MediaService],
    ) -> ImagesResponse:
        body = decode_body(await request.body(), ImageGenerationRequest)
        return await media.generate_images(principal, body, _base(request))

    @get("/images/files/{name:str}", summary="One of your generated images (API key)", media_type="image/png")
    async def own_image(self, name: FromPath[str], principal: NamedDependency[Principal],
                        media: NamedDependency[MediaService]) -> Response[bytes]:
        data, media_type = await media.own_image(principal, name)
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @post("/audio/transcriptions", status_code=200, summary="Transcribe audio (OpenAI-compatible)",
          description="Multipart `file`, `model` (openai/whisper-1, together/openai/whisper-large-v3), `prompt`, "
                      "`language`, `response_format` (json, text, srt, verbose_json, vtt), `temperature`.")
    async def transcribe(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        media: NamedDependency[MediaService],
    ) -> Response[Any]:
        upload = await _audio_form(request, media.max_audio_bytes)
        return _audio_response(await media.audio(principal, "transcribe", upload))

    @post("/audio/translations", status_code=200, summary="Translate speech into English text (OpenAI-compatible)")
    async def translate(
        self, request: Request[Principal, Any, Any], principal: NamedDependency[Principal],
        media: NamedDependency[MediaService],
    ) -> Response[Any]:
        upload = await _audio_form(request, media.max_audio_bytes)
        return _audio_response(await media.audio(principal, "translate", upload))


class MediaLinksController(Controller):
    """Signed, expiring image links: no API key (the signature is the permission)."""

    path = "/media"
    tags = ["openai-compatible"]

    @get("/images/{owner:str}/{name:str}", summary="An image through a signed link", media_type="image/png")
    async def signed_image(
        self, owner: FromPath[str], name: FromPath[str], state: State, expires: FromQuery[int],
        signature: FromQuery[str],
    ) -> Response[bytes]:
        media: MediaService = state.services.media
        data, media_type = await media.signed_image(owner, name, expires, signature)
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
