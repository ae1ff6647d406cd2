"""Images and audio on `/v1`: route by model to a provider that can, store images per tenant.

* `model` is routed like chat models (`openai/dall-e-3`, `together/black-forest-labs/FLUX.1-schnell`,
  `sandbox/sandbox-image`, or an alias); a provider without the capability (or not configured)
  is a 400 that names the providers to configure.
* Generated images are written atomically under `<data dir>/media/<tenant digest>/`. They are
  served to their tenant at `/v1/images/files/{name}` (API key), and through signed links
  `/media/images/{owner}/{name}?expires=..&signature=..` (HMAC-SHA256 with the server secret,
  valid `link_seconds`), which is the `url` the image routes answer.
* Audio uploads are checked (size, extension) before any provider is called.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_service.atomic_files import atomic_write_bytes
from finetune_service.auth import Principal
from finetune_service.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType
from finetune_service.providers.base import (
    AudioRequest,
    FineTuneProvider,
    GeneratedImage,
    ImageGenerator,
    ImageRequest,
    ProviderName,
    SpeechToText,
)
from finetune_service.schemas.media import ImageData, ImageGenerationRequest, ImagesResponse
from finetune_service.services.catalog import Catalog
from finetune_service.services.completions import provider_errors
from finetune_service.services.openai_facade import resolve_model
from finetune_service.settings import Settings

DEFAULT_IMAGE_MODEL = "sandbox/sandbox-image"
ROBIN_IMAGE_ALIAS = "ROBIN_IMAGE"
LINK_SECONDS = 3600
MAX_IMAGES = 10
MAX_PROMPT = 32000
MAX_AUDIO_BYTES = 25 * 1024 * 1024
AUDIO_EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm", "aac")
AUDIO_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_NAME = re.compile(r"^img_[0-9a-f]{24}\.(png|jpeg|webp)$")
_OWNER = re.compile(r"^[0-9a-f]{32}$")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
_ENV = {ProviderName.OPENAI: "OPENAI_API_KEY", ProviderName.TOGETHER_AI: "TOGETHER_API_KEY",
        ProviderName.FIREWORKS_AI: "FIREWORKS_API_KEY"}
_SPEECH_MODELS = {ProviderName.OPENAI: "openai/whisper-1", ProviderName.TOGETHER_AI: "together/openai/whisper-large-v3"}


def load_secret(settings: Settings) -> bytes:
    """FINETUNE_SECRET_KEY, else a random key created once in `<data dir>/secret_key` (mode 0600), so
    links survive restarts. Replicas on different disks need FINETUNE_SECRET_KEY."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
    for _ in range(50):  # another process may be writing it right now
        secret = path.read_text().strip()
        if secret:
            return secret.encode()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it or set FINETUNE_SECRET_KEY")


def owner_of(tenant_id: str) -> str:
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class AudioUpload:
    model: str | None
    filename: str
    data: bytes
    media_type: str | None
    prompt: str | None = None
    language: str | None = None
    response_format: str | None = None
    temperature: float | None = None


@dataclass
class MediaService:
    root: Path
    secret: bytes
    catalog: Catalog
    aliases: dict[str, str]
    link_seconds: int = LINK_SECONDS
    max_audio_bytes: int = MAX_AUDIO_BYTES

    # -- routing -------------------------------------------------------------------------------
    def _able(self, capability: type) -> list[FineTuneProvider]:
        return [p for p in self.catalog.providers.values() if isinstance(p, capability)]

    def _route(self, model: str, capability: type, what: str) -> tuple[FineTuneProvider, str]:
        provider_name, upstream = resolve_model(model, self.aliases)
        provider = self.catalog.provider(provider_name)
        if provider.name is ProviderName.SANDBOX and capability is SpeechToText:
            raise BadRequest(
                "The Sandbox has no speech model. Configure OpenAI (OPENAI_API_KEY) or Together AI "
                f"(TOGETHER_API_KEY) and use {' or '.join(_SPEECH_MODELS.values())}.", param="model")
        if not isinstance(provider, capability):
            able = ", ".join(p.display_name for p in self._able(capability))
            raise BadRequest(f"{provider.display_name} cannot {what}; use a model of: {able}.", param="model")
        if not provider.configured:
            raise BadRequest(f"{provider.display_name} is not configured on this service; the operator must set "
                             f"{_ENV.get(provider.name, 'its API key')} to {what} with {model!r}.", param="model")
        return provider, upstream

    # -- images --------------------------------------------------------------------------------
    @staticmethod
    def _check_image_request(request: ImageGenerationRequest) -> tuple[int, int, int, str]:
        if not request.prompt.strip():
            raise BadRequest("'prompt' must not be empty.", param="prompt")
        if len(request.prompt) > MAX_PROMPT:
            raise BadRequest(f"'prompt' is at most {MAX_PROMPT} characters, got {len(request.prompt)}.",
                             param="prompt")
        n = 1 if request.n is None else request.n
        if not 1 <= n <= MAX_IMAGES:
            raise BadRequest(f"'n' must be between 1 and {MAX_IMAGES}, got {n}.", param="n")
        response_format = request.response_format or "url"
        if response_format not in ("url", "b64_json"):
            raise BadRequest(f"'response_format' must be 'url' or 'b64_json', got {response_format!r}.",
                             param="response_format")
        if request.stream:
            raise BadRequest("Streaming image generation is not supported; omit 'stream'.", param="stream")
        width = height = 1024
        if request.size not in (None, "auto"):
            match = _SIZE.match(request.size or "")
            if match is None:
                raise BadRequest(f"'size' must look like 1024x1024, got {request.size!r}.", param="size")
            width, height = int(match[1]), int(match[2])
        return n, width, height, response_format

    def _path(self, owner: str, name: str) -> Path:
        if not _OWNER.match(owner) or not _NAME.match(name):
            raise NotFound("No such image.", param="image")
        return self.root / owner / name

    def _store(self, principal: Principal, image: GeneratedImage) -> str:
        name = f"img_{secrets.token_hex(12)}.{_EXTENSIONS.get(image.media_type, 'png')}"
        atomic_write_bytes(self._path(owner_of(principal.tenant_id), name), image.data)
        return name

    def signature(self, owner: str, name: str, expires: int) -> str:
        return hmac.new(self.secret, f"{owner}/{name}/{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, principal: Principal, name: str, base_url: str) -> str:
        owner = owner_of(principal.tenant_id)
        expires = int(time.time()) + self.link_seconds
        return (f"{base_url}/media/images/{owner}/{name}?expires={expires}"
                f"&signature={self.signature(owner, name, expires)}")

    async def generate_images(self, principal: Principal, request: ImageGenerationRequest,
                              base_url: str) -> ImagesResponse:
        n, width, height, response_format = self._check_image_request(request)
        model = request.model or DEFAULT_IMAGE_MODEL
        provider, upstream = self._route(model, ImageGenerator, "generate images")
        assert isinstance(provider, ImageGenerator)
        call = ImageRequest(model=upstream, prompt=request.prompt, n=n, width=width, height=height,
                            size=request.size, quality=request.quality, style=request.style)
        with provider_errors(provider):
            images = await provider.generate_image(call)
        sandbox = provider.name is ProviderName.SANDBOX
        data = []
        for image in images:
            name = await asyncio.to_thread(self._store, principal, image)
            revised = image.revised_prompt
            if sandbox:
                revised = f"[sandbox image: drawn offline from the prompt, not by an image model] {request.prompt}"
            if response_format == "url":
                data.append(ImageData(url=self.signed_url(principal, name, base_url), revised_prompt=revised))
            else:
                data.append(ImageData(b64_json=base64.b64encode(image.data).decode(), revised_prompt=revised))
        media_type = images[0].media_type if images else "image/png"
        return ImagesResponse(created=int(time.time()), data=data, model=model, provider=provider.name.value,
                              output_format=_EXTENSIONS.get(media_type, "png"), size=f"{width}x{height}")

    async def image_url_for(self, principal: Principal, prompt: str, base_url: str) -> str:
        """One image for the RobinApi `text-to-image` route: its signed URL."""
        model = self.aliases.get(ROBIN_IMAGE_ALIAS, DEFAULT_IMAGE_MODEL)
        result = await self.generate_images(principal, ImageGenerationRequest(prompt=prompt, model=model), base_url)
        url = result.data[0].url
        assert url is not None
        return url

    async def own_image(self, principal: Principal, name: str) -> tuple[bytes, str]:
        return await self._read(owner_of(principal.tenant_id), name)

    async def signed_image(self, owner: str, name: str, expires: int, signature: str) -> tuple[bytes, str]:
        if not hmac.compare_digest(self.signature(owner, name, expires).encode(), signature.encode()):
            raise Forbidden("This image link's signature is not valid.", param="signature")
        if expires < time.time():
            raise Forbidden("This image link has expired; generate the image again or fetch it with your API key "
                            "from /v1/images/files/{name}.", param="expires")
        return await self._read(owner, name)

    async def _read(self, owner: str, name: str) -> tuple[bytes, str]:
        path = self._path(owner, name)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound("No such image.", param="image") from None
        return data, f"image/{name.rsplit('.', 1)[-1]}"

    # -- audio ---------------------------------------------------------------------------------
    def check_audio(self, upload: AudioUpload) -> tuple[str, str]:
        if not upload.model or not upload.model.strip():
            raise BadRequest("Missing required parameter: 'model' (e.g. openai/whisper-1).", param="model")
        response_format = upload.response_format or "json"
        if response_format not in AUDIO_FORMATS:
            raise BadRequest(f"'response_format' must be one of {', '.join(AUDIO_FORMATS)}, got "
                             f"{response_format!r}.", param="response_format")
        if upload.temperature is not None and not 0 <= upload.temperature <= 1:
            raise BadRequest(f"'temperature' must be between 0 and 1, got {upload.temperature:g}.",
                             param="temperature")
        if not upload.data:
            raise BadRequest("The audio file is empty.", param="file")
        if len(upload.data) > self.max_audio_bytes:
            raise PayloadTooLarge(f"Audio files are limited to {self.max_audio_bytes} bytes; this one is "
                                  f"{len(upload.data)}.", param="file")
        extension = upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else ""
        if extension not in AUDIO_EXTENSIONS:
            raise UnsupportedMediaType(f"Unsupported audio file {upload.filename!r}; send one of: "
                                       f"{', '.join(AUDIO_EXTENSIONS)} (by file extension).", param="file")
        return response_format, f"audio/{extension}"

    async def audio(self, principal: Principal, kind: str, upload: AudioUpload) -> dict[str, Any] | str:
        """`kind`: "transcribe" (speech -> text in its language) or "translate" (speech -> English text)."""
        response_format, guessed = self.check_audio(upload)
        assert upload.model is not None
        provider, upstream = self._route(upload.model, SpeechToText, "transcribe or translate audio")
        assert isinstance(provider, SpeechToText)
        request = AudioRequest(model=upstream, filename=upload.filename, data=upload.data,
                               media_type=upload.media_type or guessed, prompt=upload.prompt,
                               language=upload.language, response_format=response_format,
                               temperature=upload.temperature)
        with provider_errors(provider):
            if kind == "translate":
                return await provider.translate(request)
            return await provider.transcribe(request)
