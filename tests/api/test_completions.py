"""`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`, saved responses and the job test route."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.auth import Principal
from finetune_service.errors import ProviderError
from finetune_service.providers.base import ProviderName
from finetune_service.providers.sandbox_engine import hashed_embedding
from finetune_service.schemas.completions import ChatCompletionRequest
from tests.api.helpers import SAMPLE
from tests.conftest import AUTH_A, AUTH_B

CHAT = "/v1/chat/completions"
JOBS = "/api/finetune/jobs"
SAMPLE_CSV = SAMPLE / "support_qa.csv"
TRAINED_QUESTION = "How do I reset my password?"
TRAINED_ANSWER = ('Click "Forgot password" on the login page, then follow the link we email you. '
                  "The link expires after 24 hours.")


# ----------------------------------------------------------------------------- shared helpers


class ScriptedProvider:
    """Wraps the Sandbox provider: fail on open, wait before / between chunks, break mid-stream,
    hand over every chunk at once (`buffered`, as when they came in one network read), and count
    how often the upstream iterator was closed."""

    def __init__(self, inner: Any, *, fail: BaseException | None = None, first_delay: float = 0.0,
                 chunk_delay: float = 0.0, fail_after: int | None = None, reply_delay: float = 0.0,
                 buffered: bool = False) -> None:
        self.inner = inner
        self.buffered = buffered
        self.reply_delay = reply_delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.replies = 0
        self.fail = fail
        self.first_delay = first_delay
        self.chunk_delay = chunk_delay
        self.fail_after = fail_after
        self.opened = 0
        self.yielded = 0
        self.closed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.reply_delay)
            return dict(await self.inner.chat_completion(body))
        finally:
            self.in_flight -= 1
            self.replies += 1

    async def stream_chat_completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        self.opened += 1
        return self._relay(await self.inner.stream_chat_completion(body))

    async def _relay(self, inner: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            await asyncio.sleep(self.first_delay)
            if self.buffered:
                for chunk in [chunk async for chunk in inner]:
                    yield chunk
                return
            async for chunk in inner:
                if self.fail_after is not None and self.yielded >= self.fail_after:
                    raise ProviderError("Sandbox (offline) dropped the connection", provider="SANDBOX", status=502)
                yield chunk
                self.yielded += 1
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
        finally:
            self.closed += 1
            await inner.aclose()


def script_sandbox(app: Litestar, **behaviour: Any) -> ScriptedProvider:
    """Replace the running app's Sandbox provider with a scripted wrapper around it."""
    providers = app.state.services.providers
    inner = providers[ProviderName.SANDBOX]
    wrapper = ScriptedProvider(getattr(inner, "inner", inner), **behaviour)
    providers[ProviderName.SANDBOX] = wrapper
    return wrapper


def chat(content: str = "hello there", model: str = "ROBIN_4", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[Any]:
    """`data:` payloads of an SSE body, decoded (the `[DONE]` marker kept as a string)."""
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def finished_job(http: AsyncTestClient[Litestar] | httpx.AsyncClient, headers: dict[str, str] = AUTH_A,
                       **overrides: Any) -> dict[str, Any]:
    """Upload the sample support dataset, fine-tune on the Sandbox, wait until the job is finished."""
    response = await http.post("/api/finetune/upload-dataset", headers=headers, files={
        "file": ("support_qa.csv", (SAMPLE_CSV.read_bytes()), "text/csv")})
    assert response.status_code == 201, response.text
    body = {"name": "support-bot", "provider": "SANDBOX", "model_name": "sandbox-chat-small",
            "dataset_path": response.json()["path"], "validation_split": "val", **overrides}
    created = await http.post(JOBS, json=body, headers=headers)
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    for _ in range(100):
        job = (await http.get(f"{JOBS}/{job_id}", params={"update_status": "true"}, headers=headers)).json()["job"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


# ----------------------------------------------------------------------------- chat


async def test_alias_routes_to_the_sandbox_and_answers_in_openai_shape(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(CHAT, json=chat("hello there"), headers=AUTH_A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "ROBIN_4"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "[sandbox] You said: hello there"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5


async def test_provider_prefix_is_stripped_and_parameters_reach_the_provider(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.post(CHAT, json=chat("one two three four five", model="sandbox/sandbox-chat-small",
                                                 max_tokens=3, temperature=0.2, top_p=0.9, stop=["x"], n=1,
                                                 user="u-1"), headers=AUTH_A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "sandbox/sandbox-chat-small"
    # max_tokens reached the Sandbox (it cuts the answer to 3 words).
    assert body["choices"][0]["message"]["content"] == "[sandbox] You said:"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_fine_tuned_model_answers_with_its_trained_answer_and_only_for_its_tenant(
    client: AsyncTestClient[Litestar],
) -> None:
    job = await finished_job(client)
    model = job["fine_tuned_model"]
    assert job["status"] == "succeeded" and model.startswith("sandbox-ft:")
    answer = await client.post(CHAT, json=chat(TRAINED_QUESTION, model=model), headers=AUTH_A)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == TRAINED_ANSWER
    assert answer.json()["model"] == model
    prefixed = await client.post(CHAT, json=chat(TRAINED_QUESTION, model=f"sandbox/{model}"), headers=AUTH_A)
    assert prefixed.json()["choices"][0]["message"]["content"] == TRAINED_ANSWER
    for name in (model, f"sandbox/{model}"):
        other = await client.post(CHAT, json=chat(TRAINED_QUESTION, model=name), headers=AUTH_B)
        assert other.status_code == 404, other.text
        assert name in other.json()["error"]["message"]


async def test_unknown_models_answer_404_naming_the_model(client: AsyncTestClient[Litestar]) -> None:
    for name in ("gpt-7-ultra", "sandbox/no-such-model", "nowhere/model-x", "sandbox-ft:sandbox-chat-small:sft-0000",
                 "together/meta-llama/Llama-3-8b"):
        response = await client.post(CHAT, json=chat(model=name), headers=AUTH_A)
        assert response.status_code == 404, (name, response.text)
        error = response.json()["error"]
        assert name in error["message"] and error["param"] == "model"
        assert error["type"] == "invalid_request_error"
    together = await client.post(CHAT, json=chat(model="together/meta-llama/Llama-3-8b"), headers=AUTH_A)
    assert "not configured" in together.json()["error"]["message"]


async def test_invalid_requests_answer_openai_errors_naming_the_parameter(client: AsyncTestClient[Litestar]) -> None:
    user = [{"role": "user", "content": "hi"}]
    cases = [
        ({"model": "ROBIN_4", "messages": []}, "messages", "at least one message"),
        ({"model": "ROBIN_4"}, "messages", "Missing required parameter"),
        ({"model": "ROBIN_4", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "one of"),
        ({"model": "ROBIN_4", "messages": [{"role": "user"}]}, "messages[0].content", "required"),
        ({"model": "ROBIN_4", "messages": user, "max_tokens": 0}, "max_tokens", "between 1 and 32768"),
        ({"model": "ROBIN_4", "messages": user, "max_tokens": 40000}, "max_tokens", "got 40000"),
        ({"model": "ROBIN_4", "messages": user, "temperature": 2.5}, "temperature", "between 0 and 2"),
        ({"model": "ROBIN_4", "messages": user, "temperature": -0.1}, "temperature", "between 0 and 2"),
        ({"model": "ROBIN_4", "messages": user, "top_p": 1.5}, "top_p", "between 0 and 1"),
        ({"model": "ROBIN_4", "messages": user, "max_tokens": "ten"}, "max_tokens", "Invalid type"),
        ({"model": "ROBIN_4", "messages": user, "frobnicate": True}, "frobnicate", "Unrecognized"),
        ({"model": "ROBIN_4", "messages": user, "stream_options": {"include_usage": True}}, "stream_options",
         "only allowed"),
        ({"model": "ROBIN_4", "messages": user, "tools": [{"type": "function"}]}, "tools[0]", "function"),
    ]
    for body, param, words in cases:
        response = await client.post(CHAT, json=body, headers=AUTH_A)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (body, error)
        assert words in error["message"], (body, error)
        assert error["type"] == "invalid_request_error"
    broken = await client.post(CHAT, content=b"{not json", headers={**AUTH_A, "Content-Type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    unauthenticated = await client.post(CHAT, json=chat())
    assert unauthenticated.status_code == 401 and "error" in unauthenticated.json()


# ----------------------------------------------------------------------------- streaming


async def test_stream_sends_chunks_usage_and_details_then_done(client: AsyncTestClient[Litestar]) -> None:
    plain = (await client.post(CHAT, json=chat("stream me please"), headers=AUTH_A)).json()
    response = await client.post(CHAT, json=chat("stream me please", stream=True,
                                                 stream_options={"include_usage": True}), headers=AUTH_A)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "ROBIN_4" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"] == plain["usage"]
    details = final["details"]
    assert details["time_to_first_token_ms"] > 0 and details["total_time_ms"] >= details["time_to_first_token_ms"]
    assert details["tokens_per_second"] > 0 and details["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert sum(1 for c in chunks if "usage" in c) == 1


async def test_stream_without_include_usage_puts_details_on_the_finish_chunk(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.post(CHAT, json=chat("no usage please", stream=True), headers=AUTH_A)
    chunks = sse_events(response.text)[:-1]
    assert not any("usage" in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["details"]["completion_tokens"] == 6  # [sandbox] You said: no usage please
    assert not any("details" in c for c in chunks[:-1])


async def test_slow_upstream_gets_keep_alive_comments(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    app.state.services.completions.keepalive_seconds = 0.02
    script_sandbox(app, first_delay=0.2)
    response = await client.post(CHAT, json=chat("slow one", stream=True), headers=AUTH_A)
    assert response.status_code == 200
    assert response.text.startswith(": keep-alive\n\n")
    assert response.text.count(": keep-alive") >= 3
    chunks = sse_events(response.text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "[sandbox] You said: slow one"


async def test_chunks_received_together_go_out_in_one_write(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    script_sandbox(app, buffered=True)
    request = ChatCompletionRequest(model="ROBIN_4", messages=[{"role": "user", "content": "all at once"}],
                                    stream=True)
    stream = await app.state.services.completions.open_stream(Principal(tenant_id="tenant-a"), request)
    writes = [write async for write in stream.events()]
    assert len(writes) == 2 and writes[1] == b"data: [DONE]\n\n"  # [DONE] stays a write of its own
    chunks = sse_events(writes[0].decode())
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "[sandbox] You said: all at once"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "details" in chunks[-1]


async def test_upstream_errors_keep_their_status_before_the_stream_starts(
    app: Litestar, client: AsyncTestClient[Litestar],
) -> None:
    scripted = script_sandbox(app, fail=ProviderError("Sandbox rate limit: slow down", provider="SANDBOX", status=429,
                                                      retry_after=7))
    for body in (chat(), chat(stream=True)):
        response = await client.post(CHAT, json=body, headers=AUTH_A)
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"] == "7"
        assert "rate limit" in response.json()["error"]["message"]
        assert not response.headers["content-type"].startswith("text/event-stream")
    scripted.fail = TimeoutError()
    timed_out = await client.post(CHAT, json=chat(stream=True), headers=AUTH_A)
    assert timed_out.status_code == 504 and "did not answer in time" in timed_out.json()["error"]["message"]
    scripted.fail = ProviderError("Sandbox is unavailable (HTTP 503)", provider="SANDBOX", status=502)
    outage = await client.post(CHAT, json=chat(), headers=AUTH_A)
    assert outage.status_code == 502 and "unavailable" in outage.json()["error"]["message"]
    scripted.fail = RuntimeError("socket exploded")
    unexpected = await client.post(CHAT, json=chat(), headers=AUTH_A)
    assert unexpected.status_code == 502 and "RuntimeError" in unexpected.json()["error"]["message"]
    assert "socket exploded" not in unexpected.text


async def test_failure_mid_stream_is_sent_as_an_error_event(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    scripted = script_sandbox(app, fail_after=2)
    response = await client.post(CHAT, json=chat("break in the middle", stream=True), headers=AUTH_A)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert "[DONE]" not in events
    assert len(events) == 3
    assert events[-1]["error"]["message"] == "Sandbox (offline) dropped the connection"
    assert events[-1]["error"]["status"] == 502
    assert scripted.closed == 1


# ----------------------------------------------------------------------------- saved responses


async def test_save_response_keeps_the_conversation_only_when_asked(client: AsyncTestClient[Litestar]) -> None:
    await client.post(CHAT, json=chat("do not keep this"), headers=AUTH_A)
    await client.post(CHAT, json=chat("do not keep this either", stream=True), headers=AUTH_A)
    saved = await client.get("/api/finetune/saved-responses", headers=AUTH_A)
    assert saved.status_code == 200 and saved.json()["saved_responses"] == []

    kept = await client.post(CHAT, json=chat("keep this one", save_response=True, temperature=0.5), headers=AUTH_A)
    assert kept.status_code == 200 and "save_response" not in kept.json()
    await client.post(CHAT, json=chat("keep the stream", save_response=True, stream=True), headers=AUTH_A)
    listed = (await client.get("/api/finetune/saved-responses", headers=AUTH_A)).json()["saved_responses"]
    assert [r["messages"][0]["content"] for r in listed] == ["keep the stream", "keep this one"]
    streamed, plain = listed
    assert streamed["stream"] is True
    assert streamed["choices"][0]["message"]["content"] == "[sandbox] You said: keep the stream"
    assert streamed["choices"][0]["finish_reason"] == "stop"
    assert plain["choices"][0]["message"]["content"] == "[sandbox] You said: keep this one"
    assert plain["parameters"] == {"temperature": 0.5} and plain["usage"]["completion_tokens"] == 6
    assert plain["model"] == "ROBIN_4" and plain["provider"] == "SANDBOX"
    page = (await client.get("/api/finetune/saved-responses", params={"limit": 1}, headers=AUTH_A)).json()
    assert page["has_more"] is True and len(page["saved_responses"]) == 1
    rest = (await client.get("/api/finetune/saved-responses", params={"after": page["next_cursor"]},
                             headers=AUTH_A)).json()
    assert [r["id"] for r in rest["saved_responses"]] == [plain["id"]]
    other = (await client.get("/api/finetune/saved-responses", headers=AUTH_B)).json()
    assert other["saved_responses"] == []


# ----------------------------------------------------------------------------- models, embeddings


async def test_models_lists_base_models_aliases_and_the_tenants_fine_tunes(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    listing = await client.get("/v1/models", headers=AUTH_A)
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["sandbox/sandbox-chat-small"]["object"] == "model"
    assert by_id["sandbox/sandbox-chat-small"]["owned_by"] == "sandbox"
    assert by_id["ROBIN_4"]["alias_of"] == "sandbox/sandbox-chat-large"
    assert by_id[job["fine_tuned_model"]]["kind"] == "fine_tuned"
    assert by_id[job["fine_tuned_model"]]["job_id"] == job["id"]
    assert not any(m.startswith("together/") for m in by_id)  # Together is not configured in tests
    other = {m["id"] for m in (await client.get("/v1/models", headers=AUTH_B)).json()["data"]}
    assert job["fine_tuned_model"] not in other and "ROBIN_4" in other
    one = await client.get("/v1/models/sandbox/sandbox-chat-large", headers=AUTH_A)
    assert one.status_code == 200 and one.json()["id"] == "sandbox/sandbox-chat-large"
    missing = await client.get("/v1/models/sandbox/nope", headers=AUTH_A)
    assert missing.status_code == 404 and "sandbox/nope" in missing.json()["error"]["message"]


async def test_embeddings_route_by_model_and_honour_base64(client: AsyncTestClient[Litestar]) -> None:
    floats = await client.post("/v1/embeddings", json={"model": "ROBIN_3", "input": ["reset my password", "hi"]},
                               headers=AUTH_A)
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["model"] == "ROBIN_3" and [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][0]["embedding"] == hashed_embedding("reset my password")
    packed = await client.post("/v1/embeddings", json={"model": "sandbox/sandbox-chat-small", "input": "hi",
                                                       "encoding_format": "base64"}, headers=AUTH_A)
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == tuple(struct.unpack(f"<{len(raw) // 4}f", struct.pack(f"<{len(raw) // 4}f",
                                                                             *hashed_embedding("hi"))))
    for bad, param in (({"model": "ROBIN_3", "input": []}, "input"), ({"model": "ROBIN_3", "input": [1, "a"]}, "input"),
                       ({"model": "ROBIN_3", "input": "x", "encoding_format": "hex"}, "encoding_format")):
        response = await client.post("/v1/embeddings", json=bad, headers=AUTH_A)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    unknown = await client.post("/v1/embeddings", json={"model": "text-embedding-9", "input": "x"}, headers=AUTH_A)
    assert unknown.status_code == 404 and "text-embedding-9" in unknown.json()["error"]["message"]


# ----------------------------------------------------------------------------- job test route


async def test_job_test_route_answers_with_the_fine_tuned_model(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client)
    response = await client.post(f"{JOBS}/{job['id']}/test", json={"prompt": TRAINED_QUESTION}, headers=AUTH_A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == job["fine_tuned_model"]
    assert body["choices"][0]["message"]["content"] == TRAINED_ANSWER
    as_messages = await client.post(f"{JOBS}/{job['id']}/test", json={
        "messages": [{"role": "user", "content": TRAINED_QUESTION}], "max_tokens": 3}, headers=AUTH_A)
    assert as_messages.json()["choices"][0]["message"]["content"] == 'Click "Forgot password"'
    both = await client.post(f"{JOBS}/{job['id']}/test", json={"prompt": "a", "messages": []}, headers=AUTH_A)
    assert both.status_code == 422 and "either" in both.json()["detail"]
    bad = await client.post(f"{JOBS}/{job['id']}/test", json={"prompt": "a", "max_tokens": 0}, headers=AUTH_A)
    assert bad.status_code == 400 and "max_tokens" in bad.json()["detail"]
    other = await client.post(f"{JOBS}/{job['id']}/test", json={"prompt": "a"}, headers=AUTH_B)
    assert other.status_code == 404


async def test_job_test_route_is_409_without_a_fine_tuned_model(client: AsyncTestClient[Litestar]) -> None:
    job = await finished_job(client, parameters={"fail_with": "out of GPUs"})
    assert job["status"] == "failed" and job["fine_tuned_model"] is None
    response = await client.post(f"{JOBS}/{job['id']}/test", json={"prompt": "hello"}, headers=AUTH_A)
    assert response.status_code == 409, response.text
    assert "no fine-tuned model" in response.json()["detail"]

