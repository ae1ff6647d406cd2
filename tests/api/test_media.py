"""Images and audio on /v1 through the official openai SDK, with OpenAI and Together emulated."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from finetune_service.app import create_app
from finetune_service.settings import ProviderCredentials, Settings
from tests.conftest import KEY_A, KEY_B
from tests.emulators.media import speech_wav
from tests.emulators.openai import create_openai_emulator
from tests.emulators.server import serve_in_thread
from tests.emulators.together import TogetherEmulator

OPENAI_KEY = "test-openai-key"
TOGETHER_KEY = "test-together-key"


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    openai_emulator = create_openai_emulator(api_key=OPENAI_KEY)
    together_emulator = TogetherEmulator(api_key=TOGETHER_KEY)
    with serve_in_thread(openai_emulator.app) as openai_url, serve_in_thread(together_emulator.app) as together_url:
        configured = dataclasses.replace(
            settings, openai=ProviderCredentials(api_key=OPENAI_KEY, base_url=f"{openai_url}/v1"),
            together=ProviderCredentials(api_key=TOGETHER_KEY, base_url=together_url))
        app = create_app(configured)
        with serve_in_thread(app) as url:
            app.state.services.media.max_audio_bytes = 200_000
            yield url


async def http(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **kwargs)


def sdk(base_url: str, key: str = KEY_A) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


async def test_sandbox_images_are_deterministic_labelled_and_private(base_url: str) -> None:
    client = sdk(base_url)
    first = await client.images.generate(model="sandbox/sandbox-image", prompt="a lighthouse at night", n=2,
                                         size="256x256", response_format="b64_json")
    again = await client.images.generate(model="sandbox/sandbox-image", prompt="a lighthouse at night", n=1,
                                         size="256x256", response_format="b64_json")
    images = [base64.b64decode(item.b64_json or "") for item in first.data]
    assert images[0] == base64.b64decode(again.data[0].b64_json or "") and images[0] != images[1]
    picture = Image.open(io.BytesIO(images[0]))
    assert picture.size == (256, 256) and "Sandbox image" in picture.info["Comment"]
    assert "sandbox image" in (first.data[0].revised_prompt or "")

    linked = await client.images.generate(model="sandbox/sandbox-image", prompt="a lighthouse at night",
                                          size="256x256")
    url = linked.data[0].url or ""
    fetched = await http("GET", url)  # a signed link: no key needed
    assert fetched.status_code == 200 and fetched.content == images[0]
    name = url.split("?")[0].rsplit("/", 1)[-1]
    own = await http("GET", f"{base_url}/v1/images/files/{name}", headers={"Authorization": f"Bearer {KEY_A}"})
    assert own.status_code == 200 and own.content == images[0]
    other = await http("GET", f"{base_url}/v1/images/files/{name}", headers={"Authorization": f"Bearer {KEY_B}"})
    assert other.status_code == 404 and other.json()["error"]["message"]
    expired = await http("GET", url.replace("expires=", "expires=1"))
    assert expired.status_code == 403


async def test_provider_images_go_through_their_sdks(base_url: str) -> None:
    client = sdk(base_url)
    dalle = await client.images.generate(model="openai/dall-e-3", prompt="a red kite", size="1024x1024",
                                         response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(dalle.data[0].b64_json or ""))).format == "PNG"
    assert dalle.data[0].revised_prompt == "An emulated picture of a red kite"
    flux = await client.images.generate(model="together/black-forest-labs/FLUX.1-schnell", prompt="a red kite",
                                        size="512x512")
    png = (await http("GET", flux.data[0].url or "")).content
    assert Image.open(io.BytesIO(png)).size == (128, 128)  # the Together emulator draws a quarter size
    with pytest.raises(openai.UnprocessableEntityError) as unsupported:  # the provider refused it
        await client.images.generate(model="openai/dall-e-2", prompt="x", size="999x999")
    assert "999x999" in unsupported.value.message


async def test_image_requests_are_checked(base_url: str) -> None:
    client = sdk(base_url)
    cases = [({"n": 11}, "'n'"), ({"size": "huge"}, "'size'"), ({"response_format": "gif"}, "response_format"),
             ({"model": "fireworks/flux"}, "OpenAI"), ({"model": "nope"}, "provider"), ({"prompt": " "}, "prompt")]
    for change, expected in cases:
        arguments = {"model": "sandbox/sandbox-image", "prompt": "a cat"} | change
        with pytest.raises(openai.APIStatusError) as refused:
            await client.images.generate(**arguments)  # type: ignore[call-overload]
        assert 400 <= refused.value.status_code < 500 and expected in refused.value.message, change
    response = await http("POST", f"{base_url}/v1/images/generations", headers={"Authorization": f"Bearer {KEY_A}"},
                          json={"prompt": "x", "colour": "blue"})
    assert response.status_code == 400 and "colour" in response.json()["error"]["message"]


async def test_audio_routes_reach_openai_and_together(base_url: str) -> None:
    client = sdk(base_url)
    audio = speech_wav("the meeting moves to Thursday")
    text = await client.audio.transcriptions.create(model="openai/whisper-1", file=("note.wav", audio))
    assert text.text == "the meeting moves to Thursday"
    srt = await client.audio.transcriptions.create(model="openai/whisper-1", file=("note.wav", audio),
                                                   response_format="srt")
    assert "00:00:00,000 --> 00:00:01,000" in srt and "Thursday" in srt
    english = await client.audio.translations.create(model="openai/whisper-1", file=("nota.wav", audio))
    assert english.text == "(translated to English) the meeting moves to Thursday"
    together = await client.audio.transcriptions.create(model="together/openai/whisper-large-v3",
                                                        file=("note.wav", audio), language="en")
    assert together.text == "the meeting moves to Thursday"
    translated = await client.audio.translations.create(model="together/openai/whisper-large-v3",
                                                        file=("note.wav", audio))
    assert "Thursday" in translated.text


async def test_audio_refusals_are_clear(base_url: str) -> None:
    client = sdk(base_url)
    audio = speech_wav("hello")
    with pytest.raises(openai.BadRequestError) as sandbox:
        await client.audio.transcriptions.create(model="sandbox/sandbox-chat-small", file=("a.wav", audio))
    assert "OPENAI_API_KEY" in sandbox.value.message and "TOGETHER_API_KEY" in sandbox.value.message
    with pytest.raises(openai.APIStatusError) as wrong_type:
        await client.audio.transcriptions.create(model="openai/whisper-1", file=("notes.txt", b"hello"))
    assert wrong_type.value.status_code == 415 and "wav" in wrong_type.value.message
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.audio.transcriptions.create(model="openai/whisper-1", file=("long.wav", speech_wav("x", 20)))
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as bad_format:
        await client.audio.transcriptions.create(model="openai/whisper-1", file=("a.wav", audio),
                                                 response_format="mp3")  # type: ignore[arg-type]
    assert "response_format" in bad_format.value.message
    with pytest.raises(openai.UnprocessableEntityError) as together_text:
        await client.audio.transcriptions.create(model="together/openai/whisper-large-v3", file=("a.wav", audio),
                                                 response_format="text")
    assert "json" in together_text.value.message
    missing = await http("POST", f"{base_url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY_A}"},
                         data={"model": "openai/whisper-1"}, files={"other": ("a.wav", audio)})
    assert missing.status_code == 400 and "'file'" in missing.json()["error"]["message"]
    no_model = await http("POST", f"{base_url}/v1/audio/translations", headers={"Authorization": f"Bearer {KEY_A}"},
                          files={"file": ("a.wav", audio)})
    assert no_model.status_code == 400 and "'model'" in no_model.json()["error"]["message"]
