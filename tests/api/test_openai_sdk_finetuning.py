"""The official openai SDK, pointed at this service, runs a fine-tune on the Sandbox provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from openai import AsyncOpenAI

from finetune_service.app import create_app
from finetune_service.settings import Settings
from tests.api.helpers import SAMPLE
from tests.conftest import KEY_A, KEY_B
from tests.emulators.server import serve_in_thread


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(settings)) as url:
        yield f"{url}/v1"


def sdk(base_url: str, key: str = KEY_A) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)


async def wait_done(client: AsyncOpenAI, job_id: str) -> openai.types.fine_tuning.FineTuningJob:
    for _ in range(100):
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished")


async def test_files_round_trip(base_url: str) -> None:
    client = sdk(base_url)
    data = (SAMPLE / "support_chat.jsonl").read_bytes()
    uploaded = await client.files.create(file=("chat.jsonl", data), purpose="fine-tune")
    assert uploaded.id.startswith("ds_") and uploaded.bytes == len(data) and uploaded.purpose == "fine-tune"
    assert (await client.files.retrieve(uploaded.id)).filename == "chat.jsonl"
    assert [f.id async for f in client.files.list()] == [uploaded.id]
    content = await client.files.content(uploaded.id)
    assert content.content == data
    deleted = await client.files.delete(uploaded.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(uploaded.id)


async def test_fine_tune_runs_to_a_model_that_answers_from_training(base_url: str) -> None:
    client = sdk(base_url)
    training = await client.files.create(file=("chat.jsonl", (SAMPLE / "support_chat.jsonl").read_bytes()),
                                         purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model="sandbox/sandbox-chat-small", training_file=training.id, hyperparameters={"n_epochs": 2},
        suffix="support",
    )
    assert job.object == "fine_tuning.job" and job.training_file == training.id
    assert job.model == "sandbox/sandbox-chat-small" and job.hyperparameters.n_epochs == 2
    done = await wait_done(client, job.id)
    assert done.status == "succeeded"
    assert done.fine_tuned_model and "support" in done.fine_tuned_model
    assert done.finished_at is not None and done.finished_at >= done.created_at
    events = [e async for e in client.fine_tuning.jobs.list_events(job.id)]
    assert events and events[0].object == "fine_tuning.job.event"
    assert any("succeeded" in e.message for e in events)
    checkpoints = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model


async def test_list_paginates_and_cancel_works(base_url: str) -> None:
    client = sdk(base_url)
    training = await client.files.create(file=("chat.jsonl", (SAMPLE / "support_chat.jsonl").read_bytes()),
                                         purpose="fine-tune")
    ids = [(await client.fine_tuning.jobs.create(model="sandbox/sandbox-chat-small",
                                                  training_file=training.id)).id for _ in range(3)]
    page = await client.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [j.id async for j in client.fine_tuning.jobs.list(limit=2)] == ids[::-1]
    cancelled = await client.fine_tuning.jobs.cancel(ids[0])
    assert cancelled.status in ("cancelled", "succeeded")
    with pytest.raises(openai.ConflictError, match="fine-tunes cannot be paused; these can: OpenAI"):
        await client.fine_tuning.jobs.pause(ids[1])


async def test_errors_come_back_as_sdk_exceptions(base_url: str) -> None:
    client = sdk(base_url)
    training = await client.files.create(file=("chat.jsonl", (SAMPLE / "support_chat.jsonl").read_bytes()),
                                         purpose="fine-tune")
    with pytest.raises(openai.UnprocessableEntityError) as no_provider:
        await client.fine_tuning.jobs.create(model="gpt-4o", training_file=training.id)
    assert "together/<model>" in no_provider.value.message
    with pytest.raises(openai.UnprocessableEntityError) as unsupported:
        await client.fine_tuning.jobs.create(model="sandbox/sandbox-chat-small", training_file=training.id,
                                             hyperparameters={"learning_rate_multiplier": 2.0})
    assert "learning_rate_multiplier" in unsupported.value.message
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.create(model="sandbox/sandbox-chat-small", training_file="file-nope")
    with pytest.raises(openai.AuthenticationError):
        await sdk(base_url, "wrong-key").fine_tuning.jobs.list()
    job = await client.fine_tuning.jobs.create(model="sandbox/sandbox-chat-small", training_file=training.id)
    with pytest.raises(openai.NotFoundError):
        await sdk(base_url, KEY_B).fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.APIStatusError) as wrong_type:
        await client.files.create(file=("notes.txt", b"hello"), purpose="fine-tune")
    assert wrong_type.value.status_code == 415 and ".jsonl" in wrong_type.value.message
