"""TogetherProvider over real loopback HTTP: the real `together` SDK against the emulator."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from together.resources.fine_tuning import AsyncFineTuningResource

from finetune_service.errors import ProviderError, ValidationFailed
from finetune_service.providers.base import CreateJobRequest, FineTuneProvider, JobStatus, ProviderJob
from finetune_service.providers.parameters import validate_parameters
from finetune_service.providers.sandbox_engine import RUNNING_STEPS, hashed_embedding, simulated_loss
from finetune_service.providers.together import STATUS_MAP, TogetherProvider, reference_token
from finetune_service.settings import ProviderCredentials
from tests.emulators.server import serve_in_thread
from tests.emulators.together import FINE_TUNABLE_MODELS, TogetherEmulator, create_together_emulator

KEY = "test-together-key"
MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
STEP = 0.05
QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote the play Hamlet?", "Hamlet was written by William Shakespeare."),
    ("How many legs does a spider have?", "A spider has eight legs."),
]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TogetherEmulator, str]]:
    emulator = create_together_emulator(api_key=KEY, step_seconds=STEP)
    with serve_in_thread(emulator.app) as base_url:
        yield emulator, base_url


@pytest.fixture
def emulator(served: tuple[TogetherEmulator, str]) -> TogetherEmulator:
    served[0].faults.clear()
    return served[0]


@pytest.fixture
def base_url(served: tuple[TogetherEmulator, str]) -> str:
    return served[1]


def make_provider(base_url: str, key: str = KEY, **kwargs: Any) -> TogetherProvider:
    return TogetherProvider(ProviderCredentials(api_key=key, base_url=base_url), **kwargs)


@pytest.fixture
async def provider(base_url: str) -> AsyncIterator[TogetherProvider]:
    provider = make_provider(base_url, timeout=5.0)
    yield provider
    await provider.aclose()


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    # Stored under an opaque name without extension, as our dataset store does.
    return write_jsonl(tmp_path / "ds_01J9ZQ", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q},
                      {"role": "assistant", "content": a}]}
        for q, a in QA
    ])


async def wait_finished(provider: TogetherProvider, job_id: str, within: float = 5.0) -> list[ProviderJob]:
    seen = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job = await provider.get_job(job_id)
        seen.append(job)
        if job.status.finished:
            return seen
        await asyncio.sleep(STEP / 4)
    raise AssertionError(f"job {job_id} did not finish; last status {seen[-1].raw_status}")


async def upload_and_create(provider: TogetherProvider, training_file: Path, reference: str,
                            **parameters: Any) -> ProviderJob:
    uploaded = await provider.upload_file(training_file, "train.jsonl")
    return await provider.create_job(CreateJobRequest(
        model=MODEL, training_file_id=uploaded.id, validation_file_id=None, parameters=parameters,
        client_reference=reference,
    ))


def test_implements_the_protocol(base_url: str) -> None:
    provider = make_provider(base_url)
    assert isinstance(provider, FineTuneProvider)
    assert provider.configured
    assert not TogetherProvider(ProviderCredentials()).configured


async def test_lifecycle_upload_train_and_serve(
    provider: TogetherProvider, emulator: TogetherEmulator, training_file: Path
) -> None:
    size = len(training_file.read_bytes())  # noqa: ASYNC240 - tiny fixture file
    uploaded = await provider.upload_file(training_file, "train.jsonl")
    assert uploaded.id.startswith("file-")
    assert uploaded.filename == "train.jsonl"
    assert uploaded.bytes == size
    assert emulator.requests_to("PUT", f"/upload/{uploaded.id}") == [None]

    created = await provider.create_job(CreateJobRequest(
        model=MODEL, training_file_id=uploaded.id, validation_file_id=None,
        parameters={"n_epochs": 2, "n_checkpoints": 2, "learning_rate": 2e-5, "lr_scheduler_type": "linear"},
        client_reference="job-lifecycle", suffix="support bot",
    ))
    assert created.id.startswith("ft-")
    assert created.status is JobStatus.QUEUED and created.raw_status == "pending"
    assert created.fine_tuned_model is None

    sent = emulator.requests_to("POST", "/v1/fine-tunes")[-1]
    assert sent["model"] == MODEL and sent["training_file"] == uploaded.id
    assert sent["validation_file"] == ""
    assert sent["suffix"] == f"support-bot-{reference_token('job-lifecycle')}"
    assert sent["n_epochs"] == 2 and sent["learning_rate"] == 2e-5
    assert sent["lr_scheduler"]["lr_scheduler_type"] == "linear"
    assert sent["training_method"] == {"method": "sft", "train_on_inputs": "auto"}
    assert sent["training_type"]["type"] == "Lora" and sent["training_type"]["lora_r"] == 16

    seen = await wait_finished(provider, created.id)
    raw = [job.raw_status for job in seen]
    assert {"running", "completed"} <= set(raw)
    ranks = [job.status.rank for job in seen]
    assert ranks == sorted(ranks), raw  # never moves backwards
    running = [job for job in seen if job.status is JobStatus.RUNNING and job.progress is not None]
    assert running and all(0 <= job.progress <= 100 for job in running)  # type: ignore[operator]

    done = seen[-1]
    assert done.status is JobStatus.SUCCEEDED and done.progress == 100.0
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("emulator-user/Meta-Llama-3.1-8B-Instruct-Reference-support-bot-r")
    assert done.metrics["train_loss"] == simulated_loss(RUNNING_STEPS)
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.created_at is not None and done.finished_at is not None and done.finished_at >= done.created_at

    events = await provider.list_events(created.id)
    types = [e.type for e in events]
    assert types[0] == "job_pending" and types[-1] == "job_complete"
    assert {"training_start", "epoch_complete", "checkpoint_save"} <= set(types)
    assert len({e.id for e in events}) == len(events)

    checkpoints = await provider.list_checkpoints(created.id)
    assert sorted(c.step for c in checkpoints if c.step is not None) == [RUNNING_STEPS // 2, RUNNING_STEPS]
    assert {c.metrics["checkpoint_type"] for c in checkpoints} == {"Intermediate", "Final"}
    assert all(c.id == f"{created.id}:{c.step}" for c in checkpoints)

    question = {"role": "user", "content": "what's the capital city of france"}
    reply = await provider.chat_completion({"model": done.fine_tuned_model, "messages": [question]})
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == QA[0][1]
    assert reply["usage"]["completion_tokens"] > 0

    chunks = [c async for c in await provider.stream_chat_completion(
        {"model": done.fine_tuned_model, "messages": [{"role": "user", "content": "who wrote hamlet?"}]}
    )]
    assert len(chunks) > 1
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == QA[1][1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] > 0 and chunks[0]["usage"] is None


async def test_base_model_chat_and_embeddings(provider: TogetherProvider) -> None:
    reply = await provider.chat_completion(
        {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "temperature": 0.2, "max_tokens": 50}
    )
    assert reply["choices"][0]["message"]["content"] == "Together emulator base model reply to: hello"
    result = await provider.embeddings({"model": "BAAI/bge-base-en-v1.5", "input": ["red apple", "green"]})
    assert [d["index"] for d in result["data"]] == [0, 1]
    assert result["data"][0]["embedding"] == pytest.approx(hashed_embedding("red apple"))


async def test_stream_errors_surface_before_the_first_chunk(provider: TogetherProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.stream_chat_completion({"model": "acme/none", "messages": [{"role": "user", "content": "x"}]})
    assert info.value.status == 404 and "Unable to access model acme/none" in info.value.detail


async def test_stream_can_be_closed_early(provider: TogetherProvider) -> None:
    stream = await provider.stream_chat_completion(
        {"model": MODEL, "messages": [{"role": "user", "content": "one two three four five"}]}
    )
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    assert first["choices"][0]["delta"]["content"] == "Together "
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_cancel(provider: TogetherProvider, training_file: Path) -> None:
    created = await upload_and_create(provider, training_file, "job-cancel")
    cancelling = await provider.cancel_job(created.id)
    assert cancelling.status is JobStatus.CANCELLING and cancelling.raw_status == "cancel_requested"
    seen = await wait_finished(provider, created.id)
    assert seen[-1].status is JobStatus.CANCELLED and seen[-1].fine_tuned_model is None
    types = [e.type for e in await provider.list_events(created.id)]
    assert types[-2:] == ["cancel_requested", "job_stopped"]
    with pytest.raises(ProviderError) as info:
        await provider.cancel_job(created.id)
    assert info.value.status == 422 and "already finished" in info.value.detail


async def test_failed_job_reports_the_error(
    provider: TogetherProvider, emulator: TogetherEmulator, training_file: Path
) -> None:
    created = await upload_and_create(provider, training_file, "job-fail")
    emulator.fail_job(created.id, "CUDA out of memory at step 1")
    job = await provider.get_job(created.id)
    assert job.status is JobStatus.FAILED and job.raw_status == "error"
    assert job.error == "CUDA out of memory at step 1"


async def test_find_job_after_a_timeout_on_create(
    base_url: str, emulator: TogetherEmulator, training_file: Path
) -> None:
    provider = make_provider(base_url, timeout=0.5)
    try:
        uploaded = await provider.upload_file(training_file, "train.jsonl")
        before = len(emulator.jobs)
        # The server creates the job but answers too late: the client sees a timeout.
        emulator.faults.add("POST", r"^/v1/fine-tunes$", delay=1.0)
        with pytest.raises(ProviderError) as info:
            await provider.create_job(CreateJobRequest(
                model=MODEL, training_file_id=uploaded.id, validation_file_id=None, parameters={},
                client_reference="job-crash",
            ))
        assert info.value.status == 504 and info.value.retryable
        assert len(emulator.requests_to("POST", "/v1/fine-tunes")) >= 1
    finally:
        await provider.aclose()

    await asyncio.sleep(0.8)  # the slow create completes server-side
    assert len(emulator.jobs) == before + 1  # exactly one job: the create was not retried
    restarted = make_provider(base_url)  # "after the crash": a fresh provider
    try:
        found = await restarted.find_job("job-crash")
        assert found is not None and found.id in emulator.jobs and found.model == MODEL
        assert await restarted.find_job("job-never-created") is None
    finally:
        await restarted.aclose()


async def test_rate_limit_is_retried_by_the_sdk(provider: TogetherProvider, emulator: TogetherEmulator) -> None:
    emulator.faults.add("GET", r"/v1/fine-tunes/models/supported$", status=429, retry_after=0.05)
    before = len(emulator.requests_to("GET", "/v1/fine-tunes/models/supported"))
    models = await provider.list_models()
    assert [m.id for m in models] == list(FINE_TUNABLE_MODELS)
    assert len(emulator.requests_to("GET", "/v1/fine-tunes/models/supported")) == before + 2


async def test_persistent_rate_limit_keeps_429_and_retry_after(
    provider: TogetherProvider, emulator: TogetherEmulator
) -> None:
    emulator.faults.add("GET", r"/v1/fine-tunes/models/supported$", status=429, retry_after=0.05, times=10)
    with pytest.raises(ProviderError) as info:
        await provider.list_models()
    assert info.value.status == 429 and info.value.retryable
    assert info.value.retry_after == pytest.approx(0.05)


async def test_persistent_server_error_is_retryable(provider: TogetherProvider, emulator: TogetherEmulator) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", status=500, retry_after=0.01, times=10)
    before = len(emulator.requests_to("POST", "/v1/chat/completions"))
    with pytest.raises(ProviderError) as info:
        await provider.chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert info.value.status == 502 and info.value.retryable
    assert len(emulator.requests_to("POST", "/v1/chat/completions")) == before + 3  # 1 + max_retries


async def test_malformed_response_is_a_retryable_502(provider: TogetherProvider, emulator: TogetherEmulator) -> None:
    emulator.faults.add("GET", r"/v1/fine-tunes/ft-x$", malformed=True)
    with pytest.raises(ProviderError) as info:
        await provider.get_job("ft-x")
    assert info.value.status == 502 and info.value.retryable


async def test_bad_key_never_leaks(base_url: str, training_file: Path) -> None:
    secret = "tgp_v1_wrong-secret-key-123"
    provider = make_provider(base_url, key=secret)
    try:
        for call in (provider.list_models(), provider.get_job("ft-1"),
                     provider.upload_file(training_file, "train.jsonl")):
            with pytest.raises(ProviderError) as info:
                await call
            assert info.value.detail == "Together AI rejected the configured API key"
            assert info.value.status == 502 and not info.value.retryable
            assert secret not in str(info.value) and secret not in repr(info.value.__dict__)
    finally:
        await provider.aclose()


async def test_unknown_model_keeps_the_providers_message(
    provider: TogetherProvider, emulator: TogetherEmulator, training_file: Path
) -> None:
    uploaded = await provider.upload_file(training_file, "train.jsonl")
    creates = len(emulator.requests_to("POST", "/v1/fine-tunes"))
    with pytest.raises(ProviderError) as info:
        await provider.create_job(CreateJobRequest(
            model="acme/not-a-model", training_file_id=uploaded.id, validation_file_id=None, parameters={},
            client_reference="job-unknown-model",
        ))
    assert info.value.status == 404 and not info.value.retryable
    assert "Model acme/not-a-model is not available for fine-tuning" in info.value.detail
    assert len(emulator.requests_to("POST", "/v1/fine-tunes")) == creates


async def test_full_dpo_job_maps_parameters_to_the_wire(
    provider: TogetherProvider, emulator: TogetherEmulator, training_file: Path
) -> None:
    await upload_and_create(provider, training_file, "job-dpo", lora=False, training_method="dpo",
                            dpo_beta=0.2, batch_size=8, random_seed=7)
    sent = emulator.requests_to("POST", "/v1/fine-tunes")[-1]
    assert sent["training_type"] == {"type": "Full"}
    assert sent["training_method"]["method"] == "dpo" and sent["training_method"]["dpo_beta"] == 0.2
    assert sent["batch_size"] == 8 and sent["random_seed"] == 7
    assert "train_on_inputs" not in sent["training_method"]


async def test_sdk_side_validation_becomes_422(
    provider: TogetherProvider, emulator: TogetherEmulator, training_file: Path
) -> None:
    creates = len(emulator.requests_to("POST", "/v1/fine-tunes"))
    with pytest.raises(ProviderError) as info:
        await upload_and_create(provider, training_file, "job-bad-params", dpo_beta=0.1)
    assert info.value.status == 422 and "dpo_beta is only supported for DPO training" in info.value.detail
    with pytest.raises(ValidationFailed):
        await upload_and_create(provider, training_file, "job-bad-params", n_epochs=0)
    assert len(emulator.requests_to("POST", "/v1/fine-tunes")) == creates


async def test_invalid_dataset_is_rejected_with_togethers_report(provider: TogetherProvider, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}]},
    ])
    with pytest.raises(ProviderError) as info:
        await provider.upload_file(bad, "bad.jsonl")
    assert info.value.status == 422 and "roles must alternate" in info.value.detail


async def test_duplicate_upload_returns_the_existing_file(
    provider: TogetherProvider, emulator: TogetherEmulator, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [{"prompt": "unique duplicate test", "completion": "yes"}])
    first = await provider.upload_file(path, "dup.jsonl")
    second = await provider.upload_file(path, "dup.jsonl")
    assert second.id == first.id and second.bytes == first.bytes
    assert len(emulator.requests_to("GET", f"/v1/files/{first.id}")) >= 1  # SDK's 409 -> retrieve


async def test_list_models_live_and_static(provider: TogetherProvider, emulator: TogetherEmulator) -> None:
    static = provider.static_models()
    assert len({m.id for m in static}) == len(static) >= 10
    assert all(m.context_length and m.supports_lora for m in static)
    live_names = [*FINE_TUNABLE_MODELS, "acme/brand-new-model"]
    emulator.faults.add("GET", r"/v1/fine-tunes/models/supported$", status=200, body={"models": live_names})
    live = await provider.list_models()
    assert [m.id for m in live] == live_names
    by_id = {m.id: m for m in live}
    static_by_id = {m.id: m for m in static}
    assert by_id["Qwen/Qwen3-8B"] == static_by_id["Qwen/Qwen3-8B"]
    assert by_id["acme/brand-new-model"].name == "brand-new-model"
    assert by_id["acme/brand-new-model"].context_length is None


async def test_base_url_with_v1_suffix_is_normalised(base_url: str) -> None:
    provider = make_provider(base_url + "/v1/")
    try:
        assert len(await provider.list_models()) == len(FINE_TUNABLE_MODELS)
    finally:
        await provider.aclose()


def test_parameter_specs_validate_and_use_sdk_names() -> None:
    specs = TogetherProvider(ProviderCredentials()).parameter_specs()
    sdk_kwargs = set(inspect.signature(AsyncFineTuningResource.create).parameters)
    assert {s.name for s in specs} <= sdk_kwargs
    defaults = validate_parameters("Together AI", specs, {})
    assert defaults["n_epochs"] == 1 and defaults["batch_size"] == "max" and defaults["lora"] is True
    assert defaults["training_method"] == "sft" and "dpo_beta" not in defaults
    assert validate_parameters("Together AI", specs, {"batch_size": 16, "train_on_inputs": "auto"})["batch_size"] == 16
    with pytest.raises(ValidationFailed) as info:
        validate_parameters("Together AI", specs, {"n_epochs": 0, "lr_scheduler_type": "step", "epochs": 3,
                                                   "batch_size": "min"})
    assert {e["field"] for e in info.value.errors} == {
        "parameters.n_epochs", "parameters.lr_scheduler_type", "parameters.epochs", "parameters.batch_size"
    }


async def test_unconfigured_provider_says_so() -> None:
    provider = TogetherProvider(ProviderCredentials())
    with pytest.raises(ProviderError) as info:
        await provider.list_models()
    assert info.value.status == 503 and "TOGETHER_API_KEY" in info.value.detail


async def test_in_stream_error_keeps_the_message_but_not_the_key() -> None:
    """Together reports a failure after the 200 as an `error` event in the stream."""
    first = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    failed = b'data: {"error":{"message":"overloaded (key sekrit-key)","type":"server_error"}}\n\n'
    sent: list[bytes] = []

    async def answer_then_fail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent.append(await reader.readuntil(b"\r\n\r\n"))
        body = first + failed
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_then_fail, "127.0.0.1", 0)
    provider = make_provider(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", key="sekrit-key")
    received = []
    try:
        with pytest.raises(ProviderError) as caught:
            async for chunk in await provider.stream_chat_completion(
                {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            ):
                received.append(chunk)
    finally:
        await provider.aclose()
        server.close()
    assert sent[0].startswith(b"POST /v1/chat/completions ") and b"Bearer sekrit-key" in sent[0]
    assert [c["choices"][0]["delta"]["content"] for c in received] == ["Hi"]
    assert caught.value.status == 502 and caught.value.retryable
    assert caught.value.detail == "Together AI error: overloaded (key [redacted])"


async def test_stream_open_retries_a_rate_limit_and_keeps_together_fields(
    provider: TogetherProvider, emulator: TogetherEmulator,
) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", status=429, retry_after=0.01)
    before = len(emulator.requests_to("POST", "/v1/chat/completions"))
    chunks = [c async for c in await provider.stream_chat_completion(
        {"model": MODEL, "messages": [{"role": "user", "content": "one two"}], "max_tokens": 5}
    )]
    assert len(emulator.requests_to("POST", "/v1/chat/completions")) == before + 2
    sent = emulator.requests_to("POST", "/v1/chat/completions")[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 5
    # Relayed as Together sent them, its own fields included.
    assert [c["choices"][0]["delta"]["token_id"] for c in chunks] == list(range(len(chunks)))
    assert chunks[-1]["usage"]["total_tokens"] > 0


async def test_stream_open_gives_up_with_the_last_error_and_no_key(
    base_url: str, emulator: TogetherEmulator,
) -> None:
    emulator.faults.add("POST", r"/v1/chat/completions$", status=503, retry_after=0.01, times=10,
                        body={"error": {"message": f"busy, key {KEY}"}})
    provider = make_provider(base_url, max_retries=1)
    before = len(emulator.requests_to("POST", "/v1/chat/completions"))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.stream_chat_completion({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    finally:
        await provider.aclose()
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (502, True, 0.01)
    assert caught.value.detail == "Together AI is unavailable (HTTP 503): busy, key [redacted]"
    assert len(emulator.requests_to("POST", "/v1/chat/completions")) == before + 2  # 1 + max_retries


def test_every_together_status_is_mapped() -> None:
    spec_statuses = {"pending", "queued", "running", "compressing", "uploading", "cancel_requested",
                     "cancelled", "error", "completed", "user_error"}
    assert set(STATUS_MAP) == spec_statuses
    assert STATUS_MAP["user_error"] is JobStatus.FAILED
    assert STATUS_MAP["cancel_requested"] is JobStatus.CANCELLING
    assert STATUS_MAP["uploading"] is JobStatus.RUNNING
    assert STATUS_MAP["completed"] is JobStatus.SUCCEEDED
