"""Upload CSV -> create a job on each real provider SDK (against its emulator) -> synced to the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.settings import ProviderCredentials, Settings
from tests.api.helpers import uploaded_id
from tests.api.test_jobs import JOBS
from tests.conftest import AUTH_A
from tests.emulators.fireworks import create_fireworks_emulator
from tests.emulators.openai import create_openai_emulator
from tests.emulators.server import serve_in_thread
from tests.emulators.together import create_together_emulator

CASES: dict[str, tuple[Callable[..., Any], str, Callable[[Settings, Any, str], Settings]]] = {
    "TOGETHER_AI": (
        create_together_emulator, "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
        lambda s, e, url: replace(s, together=ProviderCredentials(api_key=e.api_key, base_url=url)),
    ),
    "OPENAI": (
        create_openai_emulator, "gpt-4o-mini-2024-07-18",
        lambda s, e, url: replace(s, openai=ProviderCredentials(api_key=e.api_key, base_url=f"{url}/v1")),
    ),
    "FIREWORKS_AI": (
        create_fireworks_emulator, "accounts/fireworks/models/llama-v3p1-8b-instruct",
        lambda s, e, url: replace(s, fireworks=ProviderCredentials(api_key=e.api_key, base_url=url,
                                                                   account_id=e.account_id)),
    ),
}


@pytest.fixture(params=sorted(CASES))
def provider_case(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[str, str, Any, Settings]]:
    factory, model, configure = CASES[request.param]
    emulator = factory(step_seconds=0.05)
    with serve_in_thread(emulator.app) as url:
        yield request.param, model, emulator, configure(settings, emulator, url)


async def test_job_on_each_provider_runs_to_success_and_cancel_works(
    provider_case: tuple[str, str, Any, Settings],
) -> None:
    provider, model, emulator, settings = provider_case
    async with AsyncTestClient[Litestar](create_app(settings)) as client:
        dataset = await uploaded_id(client)
        body = {"name": "e2e", "provider": provider, "model_name": model, "dataset_path": dataset,
                "validation_split": "val"}
        created = await client.post(JOBS, json=body, headers={**AUTH_A, "Idempotency-Key": "e2e-1"})
        assert created.status_code == 201, created.text
        job = created.json()["job"]
        assert job["provider_job_id"], job
        replay = await client.post(JOBS, json=body, headers={**AUTH_A, "Idempotency-Key": "e2e-1"})
        assert replay.json()["job"]["id"] == job["id"]
        for _ in range(100):
            job = (await client.get(f"{JOBS}/{job['id']}", params={"update_status": "true"},
                                    headers=AUTH_A)).json()["job"]
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "succeeded", job
        assert job["fine_tuned_model"]
        assert len(emulator.jobs) == 1
        events = (await client.get(f"{JOBS}/{job['id']}/events", headers=AUTH_A)).json()["events"]
        assert [e["status_to"] for e in events if e["type"] == "status"][-1] == "succeeded"

        # Slow the provider down so the job to cancel cannot finish before the cancel arrives.
        emulator.step_seconds = 1.0
        second = (await client.post(JOBS, json={**body, "name": "to-cancel"}, headers=AUTH_A)).json()["job"]
        cancelled = await client.post(f"{JOBS}/{second['id']}/cancel", headers=AUTH_A)
        assert cancelled.status_code == 200
        for _ in range(100):
            state = (await client.get(f"{JOBS}/{second['id']}", params={"update_status": "true"},
                                      headers=AUTH_A)).json()["job"]["status"]
            if state == "cancelled":
                break
            await asyncio.sleep(0.05)
        assert state == "cancelled"


@asynccontextmanager
async def service_on(
    provider: str, settings: Settings, step_seconds: float
) -> AsyncIterator[tuple[Any, str, AsyncTestClient[Litestar], str]]:
    """One provider's emulator and a service configured for it: (emulator, its URL, client, dataset id)."""
    factory, _, configure = CASES[provider]
    emulator = factory(step_seconds=step_seconds)
    with serve_in_thread(emulator.app) as url:
        async with AsyncTestClient[Litestar](create_app(configure(settings, emulator, url))) as client:
            yield emulator, url, client, await uploaded_id(client)


async def test_cancel_of_a_job_that_finished_at_the_provider_meanwhile_is_a_conflict(settings: Settings) -> None:
    async with service_on("OPENAI", settings, step_seconds=0.02) as (emulator, url, client, dataset):
        job = (await client.post(JOBS, json={"name": "quick", "provider": "OPENAI", "dataset_path": dataset,
                                             "model_name": "gpt-4o-mini-2024-07-18"}, headers=AUTH_A)).json()["job"]
        assert job["status"] not in ("succeeded", "failed", "cancelled")
        remote = f"{url}/v1/fine_tuning/jobs/{job['provider_job_id']}"
        auth = {"Authorization": f"Bearer {emulator.api_key}"}
        async with httpx.AsyncClient() as provider:
            for _ in range(200):  # asked straight, so the service's record stays behind
                if (await provider.get(remote, headers=auth)).json()["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
        cancelled = await client.post(f"{JOBS}/{job['id']}/cancel", headers=AUTH_A)
        assert cancelled.status_code == 409, cancelled.text
        assert cancelled.json()["detail"] == (f"Job {job['id']} is already succeeded; only unfinished jobs can "
                                              "be cancelled")
        after = (await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)).json()["job"]
        assert after["status"] == "succeeded" and after["fine_tuned_model"]


async def test_provider_rejection_reaches_the_client_with_its_message(settings: Settings) -> None:
    async with service_on("TOGETHER_AI", settings, step_seconds=0.05) as (emulator, _, client, dataset):
        response = await client.post(JOBS, json={
            "name": "bad-model", "provider": "TOGETHER_AI", "model_name": "acme/not-a-model",
            "dataset_path": dataset}, headers=AUTH_A)
        assert response.status_code in (404, 422), response.text
        assert "acme/not-a-model" in response.json()["detail"]
        jobs = (await client.get(JOBS, headers=AUTH_A)).json()["jobs"]
        assert [j["status"] for j in jobs] == ["failed"]
        assert "acme/not-a-model" in jobs[0]["error"]
    assert emulator.jobs == {}


async def _until_status(client: AsyncTestClient[Litestar], job_id: str, wanted: str) -> dict[str, Any]:
    for _ in range(200):
        job: dict[str, Any] = (await client.get(f"{JOBS}/{job_id}", params={"update_status": "true"},
                                                headers=AUTH_A)).json()["job"]
        if job["status"] == wanted:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {wanted}; it is {job['status']}")


async def test_an_openai_job_pauses_and_resumes_and_others_say_they_cannot(settings: Settings) -> None:
    async with service_on("OPENAI", settings, step_seconds=0.3) as (emulator, _, client, dataset):
        body = {"name": "pausable", "provider": "OPENAI", "dataset_path": dataset,
                "model_name": "gpt-4o-mini-2024-07-18"}
        job = (await client.post(JOBS, json=body, headers=AUTH_A)).json()["job"]
        early = await client.post(f"{JOBS}/{job['id']}/pause", headers=AUTH_A)
        assert early.status_code == 409
        assert early.json()["detail"] == f"Job {job['id']} is {job['status']}; only a running job can be paused."
        await _until_status(client, job["id"], "running")
        paused = await client.post(f"{JOBS}/{job['id']}/pause", headers=AUTH_A)
        assert paused.status_code == 200 and paused.json()["job"]["status"] == "paused", paused.text
        assert emulator.jobs[job["provider_job_id"]].status == "paused"
        await asyncio.sleep(0.7)  # longer than the job had left to run: the provider holds it
        assert (await _until_status(client, job["id"], "paused"))["status"] == "paused"
        twice = await client.post(f"{JOBS}/{job['id']}/pause", headers=AUTH_A)
        assert twice.status_code == 409 and "is paused; only a running job" in twice.json()["detail"]
        # The OpenAI-compatible surface does the same (what client.fine_tuning.jobs.resume calls).
        resumed = await client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume", headers=AUTH_A)
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["object"] == "fine_tuning.job" and resumed.json()["status"] == "running"
        done = await _until_status(client, job["id"], "succeeded")
        assert done["fine_tuned_model"]
        events = (await client.get(f"{JOBS}/{job['id']}/events", headers=AUTH_A)).json()["events"]
        moves = [e["status_to"] for e in events if e["type"] == "status"]
        assert moves.index("paused") < moves.index("succeeded") and "running" in moves[moves.index("paused"):]
        late = await client.post(f"{JOBS}/{job['id']}/resume", headers=AUTH_A)
        assert late.status_code == 409 and "only a paused job can be resumed" in late.json()["detail"]

        sandbox = (await client.post(JOBS, json={**body, "provider": "SANDBOX", "model_name": "sandbox-chat-small"},
                                     headers=AUTH_A)).json()["job"]
        refused = await client.post(f"{JOBS}/{sandbox['id']}/pause", headers=AUTH_A)
        assert refused.status_code == 409 and refused.json()["detail"].startswith("Sandbox")
        assert refused.json()["detail"].endswith("fine-tunes cannot be paused; these can: OpenAI.")
        unknown = await client.post(f"{JOBS}/job_nope/resume", headers=AUTH_A)
        assert unknown.status_code == 404
