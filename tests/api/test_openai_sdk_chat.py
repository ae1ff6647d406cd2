"""The real `openai` SDK against our service running on a loopback port (real HTTP, both databases)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from litestar import Litestar
from openai import AsyncOpenAI

from finetune_service.app import create_app
from finetune_service.errors import ProviderError
from finetune_service.providers.sandbox_engine import hashed_embedding
from finetune_service.settings import Settings
from tests.api.test_completions import TRAINED_ANSWER, TRAINED_QUESTION, finished_job, script_sandbox
from tests.conftest import AUTH_A, KEY_A, KEY_B
from tests.emulators.server import serve_in_thread

HELLO = [{"role": "user", "content": "hello from the sdk"}]


@pytest.fixture
def live(settings: Settings) -> Iterator[tuple[str, Litestar]]:
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture
async def sdk(live: tuple[str, Litestar]) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{live[0]}/v1", api_key=KEY_A, max_retries=0, timeout=20) as client:
        yield client


async def test_plain_completion(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO, max_tokens=50, temperature=0.3)
    assert completion.model == "ROBIN_4"
    assert completion.choices[0].message.content == "[sandbox] You said: hello from the sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 7


async def test_streaming_joins_to_the_answer_with_usage_and_details(sdk: AsyncOpenAI) -> None:
    plain = await sdk.chat.completions.create(model="sandbox/sandbox-chat-large", messages=HELLO)
    stream = await sdk.chat.completions.create(model="sandbox/sandbox-chat-large", messages=HELLO, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    details = (last.model_extra or {})["details"]
    assert details["time_to_first_token_ms"] > 0 and details["tokens_per_second"] > 0
    assert details["completion_tokens"] == last.usage.completion_tokens
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)

    without_usage = await sdk.chat.completions.create(model="sandbox/sandbox-chat-large", messages=HELLO,
                                                      stream=True)
    chunks = [chunk async for chunk in without_usage]
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and "details" in (chunks[-1].model_extra or {})


async def test_errors_raise_the_sdks_exception_classes(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="gpt-99-imaginary", messages=HELLO)
    assert "gpt-99-imaginary" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="gpt-99-imaginary", messages=HELLO, stream=True)
    for kwargs, param in (({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 50_000}, "max_tokens"),
                          ({"temperature": 2.5}, "temperature")):
        with pytest.raises((openai.BadRequestError, openai.UnprocessableEntityError)) as bad:
            await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO, **kwargs)  # type: ignore[call-overload]
        assert bad.value.param == param
    with pytest.raises(openai.BadRequestError) as empty:
        await sdk.chat.completions.create(model="ROBIN_4", messages=[])
    assert empty.value.param == "messages"
    async with AsyncOpenAI(base_url=str(sdk.base_url), api_key="wrong-key", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="ROBIN_4", messages=HELLO)


async def test_provider_errors_keep_status_and_retry_after(sdk: AsyncOpenAI, live: tuple[str, Litestar]) -> None:
    scripted = script_sandbox(live[1], fail=ProviderError("Sandbox rate limit reached", provider="SANDBOX",
                                                          status=429, retry_after=7))
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as limited:
            await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO, stream=stream)
        assert limited.value.response.headers["retry-after"] == "7"
    scripted.fail = ProviderError("Sandbox took too long", provider="SANDBOX", status=504)
    with pytest.raises(openai.InternalServerError) as timed_out:
        await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO, stream=True)
    assert timed_out.value.status_code == 504
    scripted.fail, scripted.fail_after = None, 2
    stream = await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as broken:
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2 and "dropped the connection" in broken.value.message


async def test_client_disconnect_closes_the_upstream(
    sdk: AsyncOpenAI, live: tuple[str, Litestar], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    scripted = script_sandbox(live[1], chunk_delay=0.02)
    long_question = " ".join(f"word{i}" for i in range(300))
    stream = await sdk.chat.completions.create(
        model="ROBIN_4", messages=[{"role": "user", "content": long_question}], stream=True)
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.close()
    for _ in range(200):
        if scripted.closed:
            break
        await asyncio.sleep(0.02)
    assert scripted.opened == 1 and scripted.closed == 1
    stopped_at = scripted.yielded
    assert stopped_at < 50  # the answer has 303 chunks; the upstream stopped right after the disconnect
    await asyncio.sleep(0.2)
    assert scripted.yielded == stopped_at
    # The server kept serving and logged no error.
    after = await sdk.chat.completions.create(model="ROBIN_4", messages=HELLO)
    assert after.choices[0].message.content == "[sandbox] You said: hello from the sdk"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_fine_tuned_sandbox_model_answers_its_training_question(
    sdk: AsyncOpenAI, live: tuple[str, Litestar],
) -> None:
    async with httpx.AsyncClient(base_url=live[0], timeout=20) as http:
        job = await finished_job(http, AUTH_A)
    model = job["fine_tuned_model"]
    completion = await sdk.chat.completions.create(model=model, messages=[{"role": "user",
                                                                           "content": TRAINED_QUESTION}])
    assert completion.choices[0].message.content == TRAINED_ANSWER
    stream = await sdk.chat.completions.create(model=model, stream=True,
                                               messages=[{"role": "user", "content": TRAINED_QUESTION}])
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == TRAINED_ANSWER
    listed = {m.id async for m in sdk.models.list()}
    assert {model, "ROBIN_4", "sandbox/sandbox-chat-small"} <= listed
    async with AsyncOpenAI(base_url=str(sdk.base_url), api_key=KEY_B, max_retries=0) as tenant_b:
        with pytest.raises(openai.NotFoundError):
            await tenant_b.chat.completions.create(model=model, messages=[{"role": "user",
                                                                          "content": TRAINED_QUESTION}])
        assert model not in {m.id async for m in tenant_b.models.list()}


async def test_embeddings_through_the_sdk(sdk: AsyncOpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; the vector must survive the trip.
    response = await sdk.embeddings.create(model="ROBIN_3", input=["reset my password", "hello"])
    assert response.model == "ROBIN_3" and len(response.data) == 2
    expected = hashed_embedding("reset my password")
    assert max(abs(a - b) for a, b in zip(response.data[0].embedding, expected, strict=True)) < 1e-6
    floats = await sdk.embeddings.create(model="ROBIN_3", input="hello", encoding_format="float")
    assert floats.data[0].embedding == hashed_embedding("hello")
    with pytest.raises(openai.NotFoundError):
        await sdk.embeddings.create(model="no-such-embedder", input="x")
