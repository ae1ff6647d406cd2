from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.settings import Settings
from tests.api.helpers import uploaded_id
from tests.conftest import AUTH_A, AUTH_B

JOBS = "/api/finetune/jobs"


@pytest.fixture
async def slow_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client whose Sandbox jobs stay running: with the suite's 0.05 s steps a job can succeed
    before a busy machine gets to cancel it."""
    async with AsyncTestClient(create_app(dataclasses.replace(settings, sandbox_step_seconds=3600))) as client:
        yield client


def job_body(dataset: str, **overrides: Any) -> dict[str, Any]:
    return {"name": "support-bot", "provider": "SANDBOX", "model_name": "sandbox-chat-small",
            "dataset_path": dataset, "validation_split": "val", **overrides}


async def wait_for(client: AsyncTestClient[Litestar], job_id: str, status: str, tries: int = 40) -> dict[str, Any]:
    for _ in range(tries):
        response = await client.get(f"{JOBS}/{job_id}", params={"update_status": "true"}, headers=AUTH_A)
        job = response.json()["job"]
        if job["status"] == status:
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job stayed {job['status']}, expected {status}")


async def test_create_job_runs_to_success_with_events(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    response = await client.post(JOBS, json=job_body(dataset, parameters={"n_epochs": 2}), headers=AUTH_A)
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert job["provider_job_id"].startswith("sft-")
    assert job["parameters"]["n_epochs"] == 2 and job["parameters"]["batch_size"] == 8
    assert job["training_file"].startswith("out_") and job["validation_file"].startswith("out_")
    done = await wait_for(client, job["id"], "succeeded")
    assert done["fine_tuned_model"].startswith("sandbox-ft:sandbox-chat-small:")
    assert done["progress"] == 100.0
    assert "validation_exact_match" in done["metrics"]
    assert done["finished_at"] is not None and done["created_at"].endswith(("Z", "+00:00"))
    events = (await client.get(f"{JOBS}/{job['id']}/events", headers=AUTH_A)).json()["events"]
    changes = [(e["status_from"], e["status_to"]) for e in events if e["type"] == "status"]
    assert changes[0] == (None, "creating")
    assert changes[-1][1] == "succeeded"
    assert any(e["message"].startswith("Step 4/4") for e in events)
    checkpoints = (await client.get(f"{JOBS}/{job['id']}/checkpoints", headers=AUTH_A)).json()["checkpoints"]
    assert checkpoints[0]["model"] == done["fine_tuned_model"]


async def test_idempotency_key_never_creates_a_second_job(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    headers = {**AUTH_A, "Idempotency-Key": "create-once-1"}
    first = await client.post(JOBS, json=job_body(dataset), headers=headers)
    again = await client.post(JOBS, json=job_body(dataset), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    other = await client.post(JOBS, json=job_body(dataset, name="different"), headers=headers)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]
    listed = (await client.get(JOBS, headers=AUTH_A)).json()
    assert listed["total"] == 1


async def test_concurrent_retries_with_one_key_create_one_job(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    headers = {**AUTH_A, "Idempotency-Key": "burst"}
    responses = await asyncio.gather(*(client.post(JOBS, json=job_body(dataset), headers=headers) for _ in range(4)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["job"]["id"] for r in responses}) == 1
    assert (await client.get(JOBS, headers=AUTH_A)).json()["total"] == 1


async def test_invalid_parameters_name_the_parameter(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    response = await client.post(JOBS, json=job_body(dataset, parameters={"n_epochs": 0}), headers=AUTH_A)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "parameters.n_epochs"
    assert (await client.get(JOBS, headers=AUTH_A)).json()["total"] == 0


async def test_bad_references_are_clear(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    unknown_dataset = await client.post(JOBS, json=job_body("ds_000000000000000000000000"), headers=AUTH_A)
    assert unknown_dataset.status_code == 404
    unknown_provider = await client.post(JOBS, json=job_body(dataset, provider="HAL"), headers=AUTH_A)
    assert unknown_provider.status_code == 404 and "SANDBOX" in unknown_provider.json()["detail"]
    unknown_model = await client.post(JOBS, json=job_body(dataset, model_name="gpt-9"), headers=AUTH_A)
    assert unknown_model.status_code == 422 and "sandbox-chat-small" in unknown_model.json()["detail"]
    unconfigured = await client.post(JOBS, json=job_body(dataset, provider="TOGETHER_AI"), headers=AUTH_A)
    assert unconfigured.status_code == 422 and "not configured" in unconfigured.json()["detail"]
    missing = await client.post(JOBS, json={"name": "x"}, headers=AUTH_A)
    assert missing.status_code == 400 and "provider" in missing.json()["detail"]
    wrong_type = await client.post(JOBS, json=job_body(dataset, parameters="fast"), headers=AUTH_A)
    assert wrong_type.status_code == 400 and "parameters" in wrong_type.json()["detail"]


async def test_cancel_and_delete(slow_client: AsyncTestClient[Litestar]) -> None:
    client = slow_client
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    blocked = await client.delete(f"{JOBS}/{job['id']}", headers=AUTH_A)
    assert blocked.status_code == 409
    cancelled = await client.post(f"{JOBS}/{job['id']}/cancel", headers=AUTH_A)
    assert cancelled.status_code == 200
    assert cancelled.json()["job"]["status"] == "cancelled"
    again = await client.post(f"{JOBS}/{job['id']}/cancel", headers=AUTH_A)
    assert again.status_code == 409
    assert (await client.delete(f"{JOBS}/{job['id']}", headers=AUTH_A)).status_code == 200
    assert (await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)).status_code == 404


async def test_etags_give_304_until_something_changes(slow_client: AsyncTestClient[Litestar]) -> None:
    client = slow_client
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    first = await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)
    etag = first.headers["etag"]
    cached = await client.get(f"{JOBS}/{job['id']}", headers={**AUTH_A, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    listing = await client.get(JOBS, headers=AUTH_A)
    assert (await client.get(JOBS, headers={**AUTH_A, "If-None-Match": listing.headers["etag"]})).status_code == 304
    await client.post(f"{JOBS}/{job['id']}/cancel", headers=AUTH_A)
    changed = await client.get(f"{JOBS}/{job['id']}", headers={**AUTH_A, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert (await client.get(JOBS, headers={**AUTH_A, "If-None-Match": listing.headers["etag"]})).status_code == 200


async def test_list_filters_and_pages(slow_client: AsyncTestClient[Litestar]) -> None:
    client = slow_client
    dataset = await uploaded_id(client)
    ids = [(await client.post(JOBS, json=job_body(dataset, name=f"j{i}"), headers=AUTH_A)).json()["job"]["id"]
           for i in range(3)]
    await client.post(f"{JOBS}/{ids[0]}/cancel", headers=AUTH_A)
    page = (await client.get(JOBS, params={"limit": 2}, headers=AUTH_A)).json()
    assert page["total"] == 3 and page["has_more"] is True and len(page["jobs"]) == 2
    rest = (await client.get(JOBS, params={"limit": 2, "after": page["next_cursor"]}, headers=AUTH_A)).json()
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids[::-1]
    assert rest["has_more"] is False
    cancelled = (await client.get(JOBS, params={"status": "cancelled"}, headers=AUTH_A)).json()
    assert [j["id"] for j in cancelled["jobs"]] == [ids[0]]
    bad = await client.get(JOBS, params={"status": "exploded"}, headers=AUTH_A)
    assert bad.status_code == 400
    too_many = await client.get(JOBS, params={"limit": 100000}, headers=AUTH_A)
    assert too_many.status_code == 400 and "limit" in too_many.json()["detail"]


async def test_other_tenant_gets_404_everywhere(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/checkpoints"),
                         ("DELETE", ""), ("GET", "/stream")]:
        response = await client.request(method, f"{JOBS}/{job['id']}{path}", headers=AUTH_B)
        assert response.status_code == 404, (method, path)
    assert (await client.get(JOBS, headers=AUTH_B)).json()["total"] == 0
    stolen = await client.post(JOBS, json=job_body(dataset), headers=AUTH_B)
    assert stolen.status_code == 404


async def test_stream_pushes_job_until_finished(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    await wait_for(client, job["id"], "succeeded")
    response = await client.get(f"{JOBS}/{job['id']}/stream", headers=AUTH_A)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: job" in response.text and '"status":"succeeded"' in response.text
    assert "event: event" in response.text
