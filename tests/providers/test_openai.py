"""OpenAIProvider against the OpenAI emulator over loopback HTTP, through the real `openai` SDK."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from finetune_service.errors import ProviderError, ValidationFailed
from finetune_service.providers.base import CreateJobRequest, FineTuneProvider, JobStatus
from finetune_service.providers.chat_streams import environment_proxy
from finetune_service.providers.openai_provider import OpenAIProvider, map_openai_error
from finetune_service.providers.parameters import validate_parameters
from finetune_service.settings import ProviderCredentials
from tests.emulators.openai import OpenAIEmulator, create_openai_emulator
from tests.emulators.server import serve_in_thread
from tests.providers import polling
from tests.providers.polling import wait_for

KEY = "test-openai-key"
MODEL = "gpt-4o-mini-2024-07-18"
job_request = functools.partial(polling.job_request, model=MODEL)
CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Chile", "Santiago"), ("Ghana", "Accra"), ("Nepal", "Kathmandu"),
    ("Cuba", "Havana"), ("Iceland", "Reykjavik"),
]


def chat_lines(pairs: list[tuple[str, str]] = CAPITALS) -> str:
    return "\n".join(json.dumps({"messages": [
        {"role": "system", "content": "You answer geography questions."},
        {"role": "user", "content": f"What is the capital of {country}?"},
        {"role": "assistant", "content": f"The capital of {country} is {city}."},
    ]}) for country, city in pairs) + "\n"


def preference_lines() -> str:
    return "\n".join(json.dumps({
        "input": {"messages": [{"role": "user", "content": f"Capital of {country}?"}]},
        "preferred_output": [{"role": "assistant", "content": f"{city}."}],
        "non_preferred_output": [{"role": "assistant", "content": "I am not sure."}],
    }) for country, city in CAPITALS) + "\n"


@pytest.fixture
def emulator() -> OpenAIEmulator:
    return create_openai_emulator(api_key=KEY, step_seconds=0.05)


@pytest.fixture
def base_url(emulator: OpenAIEmulator) -> Iterator[str]:
    with serve_in_thread(emulator.app) as url:
        yield f"{url}/v1"


@pytest.fixture
async def provider(base_url: str) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), timeout=5.0, max_retries=2)
    yield p
    await p.aclose()


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text(chat_lines(), encoding="utf-8")
    return path


def test_is_a_fine_tune_provider_with_real_parameter_specs() -> None:
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY))
    assert isinstance(provider, FineTuneProvider)
    assert provider.display_name == "OpenAI" and provider.configured
    specs = provider.parameter_specs()
    defaults = validate_parameters("OpenAI", specs, {})
    assert defaults == {"method": "supervised", "n_epochs": "auto", "batch_size": "auto",
                        "learning_rate_multiplier": "auto"}
    ok = validate_parameters("OpenAI", specs, {"method": "dpo", "n_epochs": 3, "beta": 0.1, "seed": 7,
                                               "learning_rate_multiplier": 0.5, "suffix": "geo"})
    assert ok["n_epochs"] == 3 and ok["beta"] == 0.1
    with pytest.raises(ValidationFailed) as caught:
        validate_parameters("OpenAI", specs, {"n_epochs": 51, "batch_size": 0, "learning_rate_multiplier": 0,
                                              "beta": 3, "method": "reinforcement", "warmup": 1})
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {f"parameters.{n}" for n in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta",
                                                  "method", "warmup")}
    ids = [m.id for m in provider.static_models()]
    assert "gpt-4.1-2025-04-14" in ids and "gpt-3.5-turbo-0125" in ids and MODEL in ids


async def test_not_configured_raises_a_clear_error() -> None:
    provider = OpenAIProvider(ProviderCredentials())
    assert not provider.configured
    with pytest.raises(ProviderError) as caught:
        await provider.get_job("ftjob-x")
    assert caught.value.status == 503 and "OPENAI_API_KEY" in caught.value.detail


async def test_full_lifecycle_to_a_model_that_answers(
    provider: OpenAIProvider, emulator: OpenAIEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    assert uploaded.id.startswith("file-") and uploaded.filename == "geo.jsonl"
    assert uploaded.bytes == len(chat_lines().encode())

    created = await provider.create_job(job_request(uploaded.id, suffix="geo", n_epochs=2))
    assert created.status is JobStatus.VALIDATING and created.raw_status == "validating_files"
    assert created.model == MODEL and created.fine_tuned_model is None

    wire = emulator.router.requests_to("POST", r"/v1/fine_tuning/jobs$")[0].json
    assert wire["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
    assert wire["metadata"] == {"client_reference": "job-ref-1"} and wire["suffix"] == "geo"
    assert "hyperparameters" not in wire  # the deprecated top-level form is not used

    running = await wait_for(provider, created.id, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    if running.status is JobStatus.RUNNING and running.metrics:
        assert 0 <= (running.progress or 0) <= 100 and "train_loss" in running.metrics
    done = await wait_for(provider, created.id, JobStatus.SUCCEEDED)
    assert done.progress == 100.0 and done.finished_at is not None and done.created_at is not None
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith(f"ft:{MODEL}:") and ":geo:" in done.fine_tuned_model
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.metrics["train_loss"] < 2.1 and done.metrics["step"] == done.metrics["total_steps"]

    events = await provider.list_events(created.id)
    messages = [e.message for e in events]
    assert messages[0].startswith("Created fine-tuning job")
    assert messages[-1] == "The job has successfully completed"
    assert "Fine-tuning job started" in messages
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    assert any(e.type == "metrics" for e in events)

    checkpoints = await provider.list_checkpoints(created.id)
    assert len(checkpoints) == 2 and checkpoints[0].step is not None and checkpoints[1].step is not None
    assert checkpoints[0].step < checkpoints[1].step
    assert all(c.model and c.model.startswith(done.fine_tuned_model + ":ckpt-step-") for c in checkpoints)
    assert "train_loss" in checkpoints[-1].metrics

    question = {"role": "user", "content": "What is the capital of Kenya?"}
    reply = await provider.chat_completion({"model": done.fine_tuned_model, "messages": [question]})
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == "The capital of Kenya is Nairobi."
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]

    chunks = [c async for c in await provider.stream_chat_completion({"model": done.fine_tuned_model,
                                                                "messages": [question]})]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The capital of Kenya is Nairobi."
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    stream_wire = emulator.router.requests_to("POST", r"/chat/completions$")[-1].json
    assert stream_wire["stream"] is True and stream_wire["stream_options"] == {"include_usage": True}

    embedded = await provider.embeddings({"model": "text-embedding-3-small", "input": ["Nairobi", "Oslo"],
                                          "dimensions": 64})
    assert [len(d["embedding"]) for d in embedded["data"]] == [64, 64]
    assert embedded["data"][0]["embedding"] != embedded["data"][1]["embedding"]


async def test_dpo_job_puts_beta_under_the_dpo_method(
    provider: OpenAIProvider, emulator: OpenAIEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "pref.jsonl"
    path.write_text(preference_lines(), encoding="utf-8")
    uploaded = await provider.upload_file(path, "pref.jsonl")
    job = await provider.create_job(job_request(uploaded.id, method="dpo", beta=0.2))
    assert job.status is JobStatus.VALIDATING
    wire = emulator.router.requests_to("POST", r"/v1/fine_tuning/jobs$")[0].json
    assert wire["method"]["type"] == "dpo"
    assert wire["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    with pytest.raises(ValidationFailed):
        await provider.create_job(job_request(uploaded.id, reference="r2", beta=0.2))  # beta without dpo


async def test_cancel_stops_the_job(provider: OpenAIProvider, emulator: OpenAIEmulator, train_file: Path) -> None:
    emulator.step_seconds = 0.15  # leave time to cancel before it finishes, even on a busy machine
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    cancelled = await provider.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.status.finished
    await asyncio.sleep(1.0)  # past when it would have succeeded
    later = await provider.get_job(job.id)
    assert later.status is JobStatus.CANCELLED and later.fine_tuned_model is None
    with pytest.raises(ProviderError) as caught:
        await provider.cancel_job(job.id)
    assert caught.value.status == 422 and "cannot be cancelled" in caught.value.detail


async def test_pause_and_resume(base_url: str, train_file: Path) -> None:
    emulator_slow = create_openai_emulator(api_key=KEY, step_seconds=0.3)
    with serve_in_thread(emulator_slow.app) as url:
        provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=f"{url}/v1"))
        try:
            uploaded = await provider.upload_file(train_file, "geo.jsonl")
            job = await provider.create_job(job_request(uploaded.id))
            await wait_for(provider, job.id, JobStatus.RUNNING)
            paused = await provider.pause_job(job.id)
            assert paused.status is JobStatus.PAUSED and paused.raw_status == "paused"
            await asyncio.sleep(0.5)
            assert (await provider.get_job(job.id)).status is JobStatus.PAUSED
            resumed = await provider.resume_job(job.id)
            assert resumed.status is JobStatus.RUNNING
        finally:
            await provider.aclose()


async def test_failed_job_reports_the_error(
    provider: OpenAIProvider, emulator: OpenAIEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    emulator.fail_job(job.id, "The job failed due to an invalid training file.", code="invalid_training_file")
    failed = await provider.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.error == "The job failed due to an invalid training file."
    assert failed.finished_at is not None


async def test_find_job_after_a_crash(base_url: str, train_file: Path) -> None:
    first = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url))
    uploaded = await first.upload_file(train_file, "geo.jsonl")
    other = await first.create_job(job_request(uploaded.id, reference="someone-else"))
    mine = await first.create_job(job_request(uploaded.id, reference="job-42"))
    await first.aclose()  # "crash": a new process only knows our reference

    restarted = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), page_size=1)
    try:
        found = await restarted.find_job("job-42")
        assert found is not None and found.id == mine.id and found.id != other.id
        assert (await restarted.find_job("someone-else")).id == other.id  # type: ignore[union-attr]
        assert await restarted.find_job("never-created") is None
    finally:
        await restarted.aclose()


async def test_create_after_lost_response_does_not_duplicate(
    provider: OpenAIProvider, emulator: OpenAIEmulator, base_url: str, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    # The job was created, but every answer to our POST is lost (503): we must find it, not re-create it.
    client = AsyncOpenAI(api_key=KEY, base_url=base_url)
    existing = await client.fine_tuning.jobs.create(model=MODEL, training_file=uploaded.id,
                                                    metadata={"client_reference": "job-7"})
    await client.close()
    emulator.faults.add("POST", r"/v1/fine_tuning/jobs$", status=503, times=10)
    job = await provider.create_job(job_request(uploaded.id, reference="job-7"))
    assert job.id == existing.id and len(emulator.jobs) == 1


async def test_create_retries_a_transient_error_once(
    provider: OpenAIProvider, emulator: OpenAIEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    emulator.faults.add("POST", r"/v1/fine_tuning/jobs$", status=500, times=1)
    job = await provider.create_job(job_request(uploaded.id))
    assert len(emulator.jobs) == 1 and job.id in emulator.jobs
    assert [r.status for r in emulator.router.requests_to("POST", r"/v1/fine_tuning/jobs$")] == [500, 200]


async def test_rate_limit_with_retry_after_then_success(
    provider: OpenAIProvider, emulator: OpenAIEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    emulator.faults.add("GET", r"/v1/fine_tuning/jobs/ftjob-[^/]+$", status=429, times=1, retry_after=0.05)
    fetched = await provider.get_job(job.id)
    assert fetched.id == job.id
    statuses = [r.status for r in emulator.router.requests_to("GET", rf"/v1/fine_tuning/jobs/{job.id}$")]
    assert statuses == [429, 200]


async def test_persistent_rate_limit_keeps_retry_after(provider: OpenAIProvider, emulator: OpenAIEmulator) -> None:
    emulator.faults.add("GET", r"/v1/fine_tuning/jobs/", status=429, times=10, retry_after=0.02)
    with pytest.raises(ProviderError) as caught:
        await provider.get_job("ftjob-whatever")
    assert caught.value.status == 429 and caught.value.retryable
    assert caught.value.retry_after == pytest.approx(0.02)
    assert len(emulator.router.requests_to("GET", r"/v1/fine_tuning/jobs/")) == 3  # 1 + max_retries


async def test_persistent_server_error_is_retryable_502(base_url: str, emulator: OpenAIEmulator) -> None:
    emulator.faults.add("GET", r"/v1/models$", status=500, times=10, retry_after=0.01)
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), max_retries=1)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.list_models()
    finally:
        await provider.aclose()
    assert caught.value.status == 502 and caught.value.retryable
    assert len(emulator.router.requests_to("GET", r"/v1/models$")) == 2


async def test_timeout_is_retryable_504(base_url: str, emulator: OpenAIEmulator) -> None:
    emulator.faults.add("GET", r"/v1/models$", delay=0.8)
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), timeout=0.3, max_retries=0)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.list_models()
    finally:
        await provider.aclose()
    assert caught.value.status == 504 and caught.value.retryable


async def test_connection_refused_is_retryable_502() -> None:
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url="http://127.0.0.1:9/v1"), max_retries=0)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.get_job("ftjob-x")
    finally:
        await provider.aclose()
    assert caught.value.status == 502 and caught.value.retryable


async def test_bad_key_never_leaks_the_key(base_url: str, emulator: OpenAIEmulator) -> None:
    secret = "sk-wrong-key-0123456789abcdef"
    provider = OpenAIProvider(ProviderCredentials(api_key=secret, base_url=base_url))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.list_models()
    finally:
        await provider.aclose()
    error = caught.value
    assert error.status == 502 and not error.retryable
    assert error.detail == "OpenAI rejected the configured API key"
    assert secret not in str(error) and "0123" not in repr(error.__dict__)
    assert len(emulator.router.requests_to("GET", r"/v1/models$")) == 1  # 401 is not retried


async def test_unknown_model_and_bad_data_are_client_errors(
    provider: OpenAIProvider, tmp_path: Path, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    bad_model = CreateJobRequest(model="gpt-9-turbo", training_file_id=uploaded.id, validation_file_id=None,
                                 parameters={}, client_reference="r")
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(bad_model)
    assert caught.value.status == 422 and "not available for fine-tuning" in caught.value.detail

    few = tmp_path / "few.jsonl"
    few.write_text(chat_lines(CAPITALS[:4]), encoding="utf-8")
    small = await provider.upload_file(few, "few.jsonl")
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(job_request(small.id))
    assert caught.value.status == 422 and "at least 10 examples" in caught.value.detail

    with pytest.raises(ProviderError) as caught:
        await provider.get_job("ftjob-doesnotexist")
    assert caught.value.status == 404

    with pytest.raises(ProviderError) as caught:
        await provider.chat_completion({"model": "ft:nope", "messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.status == 404 and "does not exist" in caught.value.detail


async def test_stream_errors_surface_before_the_first_chunk(provider: OpenAIProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.stream_chat_completion({"model": "ft:unknown", "messages": [{"role": "user", "content": "x"}]})
    assert caught.value.status == 404


async def test_streams_reuse_one_upstream_connection(provider: OpenAIProvider, emulator: OpenAIEmulator) -> None:
    question = {"role": "user", "content": "Where is Nairobi?"}
    for _ in range(3):
        chunks = [c async for c in await provider.stream_chat_completion({"model": "gpt-4o-mini",
                                                                          "messages": [question]})]
        assert chunks[-1]["usage"]["completion_tokens"] > 0
    streams = emulator.router.requests_to("POST", r"/chat/completions$")
    assert len(streams) == 3 and len({r.peer for r in streams}) == 1


STREAM_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Where is Nairobi?"}]}


async def test_stream_open_retries_a_rate_limit_then_streams(
    provider: OpenAIProvider, emulator: OpenAIEmulator,
) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", status=429, times=1, retry_after=0.01)
    chunks = [c async for c in await provider.stream_chat_completion(STREAM_BODY)]
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    # The emulator records no status for a streamed answer.
    assert [r.status for r in emulator.router.requests_to("POST", r"/chat/completions$")] == [429, None]


async def test_stream_open_gives_up_with_the_last_error(base_url: str, emulator: OpenAIEmulator) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", status=503, times=10, retry_after=0.01)
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), max_retries=1)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.stream_chat_completion(STREAM_BODY)
    finally:
        await provider.aclose()
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (502, True, 0.01)
    assert "OpenAI is unavailable (503)" in caught.value.detail
    assert len(emulator.router.requests_to("POST", r"/chat/completions$")) == 2  # 1 + max_retries


async def test_stream_open_timeout_is_504_and_refused_is_502(base_url: str, emulator: OpenAIEmulator) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", delay=0.8)
    slow = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), timeout=0.3, max_retries=0)
    gone = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url="http://127.0.0.1:9/v1"), max_retries=0)
    try:
        with pytest.raises(ProviderError) as timed_out:
            await slow.stream_chat_completion(STREAM_BODY)
        with pytest.raises(ProviderError) as refused:
            await gone.stream_chat_completion(STREAM_BODY)
    finally:
        await slow.aclose()
        await gone.aclose()
    assert (timed_out.value.status, timed_out.value.detail) == (504, "OpenAI did not answer in time")
    assert (refused.value.status, refused.value.detail) == (502, "Could not reach OpenAI")


async def test_a_stream_cut_midway_raises_a_provider_error() -> None:
    first = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'

    async def answer_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + f"{len(first):x}\r\n".encode() + first + b"\r\n")
        await writer.drain()
        writer.close()  # no terminating chunk: the body is cut

    server = await asyncio.start_server(answer_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1"))
    received = []
    try:
        with pytest.raises(ProviderError) as caught:
            async for chunk in await provider.stream_chat_completion(STREAM_BODY):
                received.append(chunk)
    finally:
        await provider.aclose()
        server.close()
    assert [c["choices"][0]["delta"]["content"] for c in received] == ["Hi"]
    assert (caught.value.status, caught.value.detail) == (502, "OpenAI stream was interrupted")


async def test_list_models_keeps_only_fine_tunable_snapshots(provider: OpenAIProvider) -> None:
    models = await provider.list_models()
    ids = {m.id for m in models}
    assert MODEL in ids and "gpt-4.1-2025-04-14" in ids
    assert "gpt-4o" not in ids and "text-embedding-3-small" not in ids
    assert all(m.context_length for m in models)


async def test_events_paginate_across_pages(base_url: str, emulator: OpenAIEmulator, train_file: Path) -> None:
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url=base_url), page_size=3)
    try:
        uploaded = await provider.upload_file(train_file, "geo.jsonl")
        job = await provider.create_job(job_request(uploaded.id))
        await wait_for(provider, job.id, JobStatus.SUCCEEDED)
        events = await provider.list_events(job.id)
        assert len(events) == len(emulator.jobs[job.id].events) > 6
        assert len({e.id for e in events}) == len(events)
        pages = emulator.router.requests_to("GET", rf"/v1/fine_tuning/jobs/{job.id}/events$")
        assert sum(1 for r in pages if r.query_dict().get("after")) >= 2
        checkpoints = await provider.list_checkpoints(job.id)
        assert len(checkpoints) == 2
    finally:
        await provider.aclose()


def test_error_mapping_table() -> None:
    import httpx2
    import openai

    request = httpx2.Request("GET", "http://x/v1/models")

    def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
        response = httpx2.Response(status, headers=headers or {}, request=request)
        return openai.APIStatusError("m", response=response, body={"message": f"provider says {status}"})

    assert map_openai_error(status_error(400)).status == 422
    assert map_openai_error(status_error(400)).detail == "provider says 400"
    assert map_openai_error(status_error(422)).status == 422
    assert map_openai_error(status_error(404)).status == 404
    limited = map_openai_error(status_error(429, {"retry-after": "7"}))
    assert (limited.status, limited.retry_after, limited.retryable) == (429, 7.0, True)
    assert map_openai_error(status_error(503)).status == 502 and map_openai_error(status_error(503)).retryable
    assert map_openai_error(openai.APITimeoutError(request=request)).status == 504


async def test_chat_passes_unknown_fields_through_and_rejects_malformed_bodies(
    provider: OpenAIProvider, emulator: OpenAIEmulator
) -> None:
    reply = await provider.chat_completion({"model": "gpt-4o-mini", "top_k": 5, "temperature": 0.2,
                                            "messages": [{"role": "user", "content": "Hello there"}]})
    assert "Hello there" in reply["choices"][0]["message"]["content"]
    wire = emulator.router.requests_to("POST", r"/chat/completions$")[-1].json
    assert wire["top_k"] == 5 and wire["temperature"] == 0.2
    with pytest.raises(ProviderError) as caught:
        await provider.chat_completion({"model": "gpt-4o-mini"})  # no messages
    assert caught.value.status == 422


def proxy_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Exactly these proxy variables, whatever the machine running the tests has set."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_streams_use_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_environment(monkeypatch, HTTPS_PROXY="http://proxy.internal:3128", NO_PROXY="localhost,.example.org")
    assert environment_proxy("https://api.openai.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert environment_proxy("https://llm.example.org/v1/chat/completions") is None
    assert environment_proxy("http://api.openai.com/v1/chat/completions") is None  # no HTTP_PROXY
    monkeypatch.delenv("HTTPS_PROXY")
    assert environment_proxy("https://api.openai.com/v1/chat/completions") is None


async def test_a_stream_goes_through_that_proxy(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator stands in for the proxy: a host that does not resolve is reached only through it.
    proxy_environment(monkeypatch, HTTP_PROXY=base_url.removesuffix("/v1"))
    provider = OpenAIProvider(ProviderCredentials(api_key=KEY, base_url="http://upstream.invalid/v1"))
    try:
        chunks = [c async for c in await provider.stream_chat_completion(STREAM_BODY)]
    finally:
        await provider.aclose()
    assert chunks[-1]["usage"]["completion_tokens"] > 0
