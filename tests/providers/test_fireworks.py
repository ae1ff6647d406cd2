"""FireworksProvider (raw httpx) against the Fireworks emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from finetune_service.errors import ProviderError, ValidationFailed
from finetune_service.providers.base import FineTuneProvider, JobStatus
from finetune_service.providers.fireworks import FireworksProvider, dataset_id_for, job_id_for
from finetune_service.providers.parameters import validate_parameters
from finetune_service.settings import ProviderCredentials
from tests.emulators.fireworks import FireworksEmulator, create_fireworks_emulator
from tests.emulators.server import serve_in_thread
from tests.providers import polling
from tests.providers.polling import wait_for

KEY = "test-fireworks-key"
ACCOUNT = "test-account"
MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
job_request = functools.partial(polling.job_request, model=MODEL)
PAIRS = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo")]


def chat_lines(pairs: list[tuple[str, str]] = PAIRS) -> str:
    return "\n".join(json.dumps({"messages": [
        {"role": "user", "content": f"What is the capital of {country}?"},
        {"role": "assistant", "content": f"The capital of {country} is {city}."},
    ]}) for country, city in pairs) + "\n"


@pytest.fixture
def emulator() -> FireworksEmulator:
    return create_fireworks_emulator(api_key=KEY, account_id=ACCOUNT, step_seconds=0.05)


@pytest.fixture
def base_url(emulator: FireworksEmulator) -> Iterator[str]:
    with serve_in_thread(emulator.app) as url:
        yield url


def make_provider(
    base_url: str, *, key: str = KEY, account: str | None = ACCOUNT, **kwargs: object
) -> FireworksProvider:
    options: dict[str, object] = {"timeout": 5.0, "max_retries": 2, "backoff_base": 0.001, "poll_interval": 0.01}
    options.update(kwargs)
    return FireworksProvider(ProviderCredentials(api_key=key, base_url=base_url, account_id=account),
                             **options)  # type: ignore[arg-type]


@pytest.fixture
async def provider(base_url: str) -> AsyncIterator[FireworksProvider]:
    p = make_provider(base_url)
    yield p
    await p.aclose()


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text(chat_lines(), encoding="utf-8")
    return path


def test_is_a_fine_tune_provider_with_real_parameter_specs() -> None:
    provider = FireworksProvider(ProviderCredentials(api_key=KEY, account_id=ACCOUNT))
    assert isinstance(provider, FineTuneProvider)
    assert provider.configured and provider.display_name == "Fireworks AI"
    assert not FireworksProvider(ProviderCredentials(api_key=KEY)).configured  # the account id is required too
    specs = provider.parameter_specs()
    names = {s.name for s in specs}
    assert {"epochs", "learningRate", "loraRank", "maxContextLength", "batchSize", "learningRateWarmupSteps",
            "gradientAccumulationSteps"} <= names
    assert validate_parameters("Fireworks AI", specs, {}) == {"epochs": 1, "learningRate": 0.0001, "loraRank": 8}
    with pytest.raises(ValidationFailed) as caught:
        validate_parameters("Fireworks AI", specs, {"epochs": 0, "loraRank": 12, "learningRate": 0, "nope": 1})
    assert {e["field"] for e in caught.value.errors} == {
        "parameters.epochs", "parameters.loraRank", "parameters.learningRate", "parameters.nope"}
    assert all(m.id.startswith("accounts/fireworks/models/") for m in provider.static_models())


def test_ids_are_deterministic_and_valid() -> None:
    assert job_id_for("Job 42/ABC") == job_id_for("Job 42/ABC") != job_id_for("Job 43/ABC")
    assert job_id_for("Job 42/ABC").startswith("ft-job-42-abc-")
    for ref in ("x" * 300, "___", "42", "ÄÖÜ"):
        job_id = job_id_for(ref)
        assert len(job_id) <= 63 and job_id[0].isalpha() and all(c.isalnum() or c == "-" for c in job_id)
    assert dataset_id_for(b"a") == dataset_id_for(b"a") != dataset_id_for(b"b")


async def test_not_configured_raises_a_clear_error() -> None:
    provider = FireworksProvider(ProviderCredentials(api_key=KEY))
    with pytest.raises(ProviderError) as caught:
        await provider.get_job("x")
    assert caught.value.status == 503 and "FIREWORKS_ACCOUNT_ID" in caught.value.detail


async def test_full_lifecycle_to_a_model_that_answers(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    content = chat_lines().encode()
    assert uploaded.id == dataset_id_for(content) and uploaded.bytes == len(content)
    dataset = emulator.datasets[uploaded.id]
    assert dataset.state == "READY" and len(dataset.records) == len(PAIRS) and dataset.format == "CHAT"
    create_wire = emulator.router.requests_to("POST", r"/datasets$")[0].json
    assert create_wire["dataset"]["exampleCount"] == str(len(PAIRS))

    created = await provider.create_job(job_request(uploaded.id, epochs=2, loraRank=16))
    assert created.id == job_id_for("job-ref-1")
    assert created.status is JobStatus.QUEUED and created.raw_status == "JOB_STATE_VALIDATING"
    post = emulator.router.requests_to("POST", r"/supervisedFineTuningJobs$")[0]
    assert post.query_dict() == {"supervisedFineTuningJobId": created.id}
    assert post.json["baseModel"] == MODEL and post.json["epochs"] == 2 and post.json["loraRank"] == 16
    assert post.json["dataset"] == f"accounts/{ACCOUNT}/datasets/{uploaded.id}"

    done = await wait_for(provider, created.id, JobStatus.SUCCEEDED)
    assert done.fine_tuned_model == f"accounts/{ACCOUNT}/models/{created.id}"
    assert done.progress == 100.0 and done.finished_at is not None and done.created_at is not None
    assert done.trained_tokens and done.trained_tokens > 0 and "trainLoss" in done.metrics

    events = await provider.list_events(created.id)
    assert events[0].message.startswith("Job created") and "completed" in events[-1].message
    checkpoints = await provider.list_checkpoints(created.id)
    assert [c.model for c in checkpoints] == [done.fine_tuned_model]

    question = {"role": "user", "content": "What is the capital of Peru?"}
    reply = await provider.chat_completion({"model": done.fine_tuned_model, "messages": [question]})
    assert reply["choices"][0]["message"]["content"] == "The capital of Peru is Lima."
    chunks = [c async for c in await provider.stream_chat_completion({"model": done.fine_tuned_model,
                                                                "messages": [question]})]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The capital of Peru is Lima."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] > 0
    assert emulator.router.requests_to("POST", r"^/inference/v1/chat/completions$")

    embedded = await provider.embeddings({"model": "nomic-ai/nomic-embed-text-v1.5", "input": "Lima"})
    assert len(embedded["data"][0]["embedding"]) == 768


async def test_streams_reuse_one_upstream_connection(provider: FireworksProvider, emulator: FireworksEmulator) -> None:
    question = {"role": "user", "content": "Where is Lima?"}
    for _ in range(3):
        chunks = [c async for c in await provider.stream_chat_completion({
            "model": "accounts/fireworks/models/qwen3-8b", "messages": [question]})]
        assert "Lima" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    streams = emulator.router.requests_to("POST", r"^/inference/v1/chat/completions$")
    assert len(streams) == 3 and len({r.peer for r in streams}) == 1


async def test_duplicate_create_returns_the_same_job(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    first = await provider.create_job(job_request(uploaded.id, reference="job-9"))
    second = await provider.create_job(job_request(uploaded.id, reference="job-9"))
    assert second.id == first.id and list(emulator.jobs) == [first.id]
    statuses = [r.status for r in emulator.router.requests_to("POST", r"/supervisedFineTuningJobs$")]
    assert statuses == [200, 409]


async def test_retry_after_a_lost_create_response_does_not_duplicate(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    await provider.create_job(job_request(uploaded.id, reference="job-5"))  # the "lost" first attempt
    emulator.faults.add("POST", r"/supervisedFineTuningJobs$", status=502, times=1)
    job = await provider.create_job(job_request(uploaded.id, reference="job-5"))
    assert job.id == job_id_for("job-5") and len(emulator.jobs) == 1


async def test_same_file_uploads_once(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    first = await provider.upload_file(train_file, "geo.jsonl")
    second = await provider.upload_file(train_file, "again.jsonl")
    assert first.id == second.id and len(emulator.datasets) == 1
    assert len(emulator.router.requests_to("POST", r":upload$")) == 1


async def test_cancel(provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path) -> None:
    emulator.step_seconds = 0.15  # leave time to cancel before it finishes, even on a busy machine
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    cancelled = await provider.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.raw_status == "JOB_STATE_CANCELLED"
    await asyncio.sleep(1.0)  # past when it would have completed
    assert (await provider.get_job(job.id)).status is JobStatus.CANCELLED
    assert emulator.job_state(job.id) == "JOB_STATE_CANCELLED"
    with pytest.raises(ProviderError) as caught:
        await provider.cancel_job(job.id)
    assert caught.value.status == 422 and "terminal" in caught.value.detail


async def test_failed_job_reports_the_error(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    emulator.fail_job(job.id, "Out of GPU memory at step 3")
    failed = await provider.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.error == "Out of GPU memory at step 3"
    events = await provider.list_events(job.id)
    assert events[-1].level == "error" and "Out of GPU memory" in events[-1].message


async def test_find_job_after_a_crash(base_url: str, train_file: Path) -> None:
    first = make_provider(base_url)
    uploaded = await first.upload_file(train_file, "geo.jsonl")
    created = await first.create_job(job_request(uploaded.id, reference="job-77"))
    await first.aclose()
    restarted = make_provider(base_url)
    try:
        found = await restarted.find_job("job-77")
        assert found is not None and found.id == created.id
        assert await restarted.find_job("job-78") is None
    finally:
        await restarted.aclose()


async def test_list_jobs_follows_page_tokens(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    ids = {(await provider.create_job(job_request(uploaded.id, reference=f"p-{i}"))).id for i in range(3)}
    jobs = await provider.list_jobs(page_size=2)
    assert {j.id for j in jobs} == ids and len(jobs) == 3
    pages = emulator.router.requests_to("GET", r"/supervisedFineTuningJobs$")
    assert len(pages) == 2 and "pageToken" in pages[1].query_dict()


async def test_rate_limit_with_retry_after_then_success(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    job = await provider.create_job(job_request(uploaded.id))
    emulator.faults.add("GET", r"/supervisedFineTuningJobs/", status=429, times=1, retry_after=0.05)
    started = time.monotonic()
    assert (await provider.get_job(job.id)).id == job.id
    assert time.monotonic() - started >= 0.05  # the retry-after was honoured
    assert [r.status for r in emulator.router.requests_to("GET", r"/supervisedFineTuningJobs/")] == [429, 200]


async def test_persistent_errors_are_retryable(base_url: str, emulator: FireworksEmulator) -> None:
    provider = make_provider(base_url, max_retries=3)
    try:
        emulator.faults.add("GET", r"/supervisedFineTuningJobs/", status=500, times=100)
        with pytest.raises(ProviderError) as caught:
            await provider.get_job("anything")
        assert caught.value.status == 502 and caught.value.retryable
        assert len(emulator.router.requests_to("GET", r"/supervisedFineTuningJobs/")) == 4
        emulator.faults.clear()
        emulator.faults.add("GET", r"/models$", status=429, times=100, retry_after=0.01)
        with pytest.raises(ProviderError) as caught:
            await provider.list_models()
        assert caught.value.status == 429 and caught.value.retryable
        assert caught.value.retry_after == pytest.approx(0.01)
        assert len(emulator.router.requests_to("GET", r"/models$")) == 4
    finally:
        await provider.aclose()


async def test_timeout_and_connection_errors(base_url: str, emulator: FireworksEmulator) -> None:
    emulator.faults.add("GET", r"/supervisedFineTuningJobs/", delay=1.0)
    slow = make_provider(base_url, timeout=0.2, max_retries=0)
    try:
        with pytest.raises(ProviderError) as caught:
            await slow.get_job("x")
        assert caught.value.status == 504 and caught.value.retryable
    finally:
        await slow.aclose()
    down = make_provider("http://127.0.0.1:9", max_retries=1)
    try:
        with pytest.raises(ProviderError) as caught:
            await down.get_job("x")
        assert caught.value.status == 502 and caught.value.retryable
    finally:
        await down.aclose()


async def test_bad_key_and_wrong_account(base_url: str, emulator: FireworksEmulator) -> None:
    secret = "fw-secret-9876543210"
    bad = make_provider(base_url, key=secret)
    try:
        with pytest.raises(ProviderError) as caught:
            await bad.get_job("x")
    finally:
        await bad.aclose()
    assert caught.value.status == 502 and not caught.value.retryable
    assert caught.value.detail == "Fireworks AI rejected the configured API key" and secret not in str(caught.value)
    assert len(emulator.router.requests_to("GET", r"/supervisedFineTuningJobs/")) == 1  # not retried

    other = make_provider(base_url, account="someone-else")
    try:
        with pytest.raises(ProviderError) as caught:
            await other.get_job("x")
    finally:
        await other.aclose()
    assert caught.value.status == 502 and "FIREWORKS_ACCOUNT_ID" in caught.value.detail


async def test_unknown_model_and_missing_resources(provider: FireworksProvider, train_file: Path) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(job_request(uploaded.id, model="no-such-model"))
    assert caught.value.status == 404 and "no-such-model" in caught.value.detail
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(job_request("ds-missing", reference="r2"))
    assert caught.value.status == 404 and "ds-missing" in caught.value.detail
    with pytest.raises(ProviderError) as caught:
        await provider.get_job("never-made")
    assert caught.value.status == 404
    with pytest.raises(ProviderError) as caught:
        await provider.stream_chat_completion({"model": "accounts/x/models/none", "messages": [
            {"role": "user", "content": "hi"}]})
    assert caught.value.status == 404 and "not found" in caught.value.detail.lower()


async def test_too_few_examples_is_a_client_error(provider: FireworksProvider, tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text(chat_lines(PAIRS[:2]), encoding="utf-8")
    uploaded = await provider.upload_file(path, "two.jsonl")
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(job_request(uploaded.id))
    assert caught.value.status == 422 and "at least 3" in caught.value.detail


async def test_list_models_returns_tunable_base_models(provider: FireworksProvider) -> None:
    models = await provider.list_models()
    ids = {m.id for m in models}
    assert MODEL in ids and all(i.startswith("accounts/fireworks/models/") for i in ids)
    assert all(m.context_length and m.supports_lora for m in models)


async def test_conflict_on_output_model_is_not_mistaken_for_our_job(
    provider: FireworksProvider, emulator: FireworksEmulator, train_file: Path
) -> None:
    uploaded = await provider.upload_file(train_file, "geo.jsonl")
    await provider.create_job(job_request(uploaded.id, reference="a", outputModel="geo-model"))
    with pytest.raises(ProviderError) as caught:
        await provider.create_job(job_request(uploaded.id, reference="b", outputModel="geo-model"))
    assert caught.value.status == 409 and "geo-model" in caught.value.detail
    assert len(emulator.jobs) == 1
