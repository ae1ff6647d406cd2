"""The scheduler and JobSync: recovery after crashes, provider faults, several replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.auth import Principal
from finetune_service.container import Services
from finetune_service.db.tables import Job, utcnow
from finetune_service.providers.base import CreateJobRequest, JobStatus, ProviderName
from finetune_service.schemas.datasets import FormatRequest
from finetune_service.schemas.jobs import CreateJobBody
from finetune_service.services.sync import JobSync
from finetune_service.settings import ProviderCredentials, Settings
from tests.api.helpers import SAMPLE, uploaded_id
from tests.api.test_jobs import JOBS, job_body
from tests.conftest import AUTH_A
from tests.emulators.server import serve_in_thread
from tests.emulators.together import TogetherEmulator, create_together_emulator

TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
TENANT = Principal(tenant_id="tenant-a")


@pytest.fixture
def together() -> Iterator[tuple[TogetherEmulator, str]]:
    emulator = create_together_emulator(step_seconds=0.05)
    with serve_in_thread(emulator.app) as url:
        yield emulator, url


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    started = await Services.start(settings)
    yield started
    await started.close()


async def stranded_job(services: Services, **fields: Any) -> Job:
    """A job as a crash leaves it: committed as `creating`, lease expired, never started."""
    async def chunks() -> AsyncIterator[bytes]:
        yield (SAMPLE / "support_qa.csv").read_bytes()

    dataset = await services.datasets.upload(TENANT, "support_qa.csv", chunks())
    output = await services.datasets.format(TENANT, FormatRequest(dataset_path=dataset.id))
    job = Job(tenant_id=TENANT.tenant_id, name="stranded", provider="SANDBOX", base_model="sandbox-chat-small",
              dataset_id=dataset.id, split_name="train", format_type="openai_chat_jsonl", data_strategy="final_only",
              training_output_id=output.id, status=JobStatus.CREATING.value, **fields)
    async with services.database.session() as session:
        session.add(job)
    return job


def sandbox_job_files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "sandbox" / "jobs").glob("*.json"))


async def test_scheduler_carries_a_job_to_the_end(settings: Settings) -> None:
    app = create_app(replace(settings, sync_interval_seconds=0.1))
    async with AsyncTestClient(app) as client:
        dataset = await uploaded_id(client)
        job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
        for _ in range(100):
            current = (await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)).json()["job"]
            if current["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert current["status"] == "succeeded"
        assert current["fine_tuned_model"]


async def test_a_job_due_between_intervals_is_synced_within_a_second(settings: Settings) -> None:
    """Each job has its own clock (one interval after its last sync); with a 30 s interval the
    scheduler still looks every second, so syncs spread out instead of waiting for the next burst."""
    started = await Services.start(replace(settings, sync_interval_seconds=30, sandbox_step_seconds=3600))
    try:
        job = await stranded_job(started)
        for _ in range(40):  # the first tick, at start, launches it
            launched = await started.jobs.get(TENANT, job.id)
            if launched.provider_job_id is not None:
                break
            await asyncio.sleep(0.05)
        async with started.database.session() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.next_sync_at = utcnow() + timedelta(seconds=0.5)
        for _ in range(50):
            if (await started.jobs.get(TENANT, job.id)).version > launched.version:
                break
            await asyncio.sleep(0.05)
        assert (await started.jobs.get(TENANT, job.id)).version > launched.version
    finally:
        await started.close()


async def test_job_stranded_before_the_provider_call_is_started_once(
    services: Services, settings: Settings
) -> None:
    job = await stranded_job(services)
    report = await services.sync.tick()
    assert report.job_ids == (job.id,) and report.synced == 1
    assert await services.sync.tick() == type(report)((), 0, 0)  # not due again yet
    recovered = await services.jobs.get(TENANT, job.id)
    assert recovered.provider_job_id is not None and recovered.status != "creating"
    assert len(sandbox_job_files(settings)) == 1


async def test_job_created_at_provider_before_crash_is_found_not_duplicated(
    services: Services, settings: Settings
) -> None:
    job = await stranded_job(services)
    sandbox = services.providers[ProviderName.SANDBOX]
    uploaded = await sandbox.upload_file(
        services.datasets.store.output_path(job.tenant_id, job.dataset_id or "", job.training_output_id or ""),
        "train.jsonl")
    remote = await sandbox.create_job(CreateJobRequest(
        model="sandbox-chat-small", training_file_id=uploaded.id, validation_file_id=None, parameters={},
        client_reference=job.id))
    await services.sync.tick()
    recovered = await services.jobs.get(TENANT, job.id)
    assert recovered.provider_job_id == remote.id
    assert len(sandbox_job_files(settings)) == 1


async def test_a_held_lease_keeps_other_workers_away(services: Services) -> None:
    job = await stranded_job(services, lease_owner="someone-else", lease_until=utcnow() + timedelta(minutes=5))
    assert (await services.sync.tick()).claimed == 0
    assert (await services.jobs.get(TENANT, job.id)).provider_job_id is None


async def test_rate_limited_create_is_retried_with_backoff(
    settings: Settings, together: tuple[TogetherEmulator, str]
) -> None:
    emulator, url = together
    configured = replace(settings, together=ProviderCredentials(api_key=emulator.api_key, base_url=url))
    emulator.faults.add("POST", r"^/v1/fine-tunes$", status=429, times=1, retry_after=0.0)
    async with AsyncTestClient(create_app(configured)) as client:
        dataset = await uploaded_id(client)
        body = job_body(dataset, provider="TOGETHER_AI", model_name=TOGETHER_MODEL, validation_split=None)
        created = await client.post(JOBS, json=body, headers=AUTH_A)
        assert created.status_code == 201, created.text
        job = created.json()["job"]
        assert job["status"] == "creating" and job["provider_job_id"] is None
        events = (await client.get(f"{JOBS}/{job['id']}/events", headers=AUTH_A)).json()["events"]
        assert events[-1]["type"] == "retry" and "429" in events[-1]["message"]
        for _ in range(60):
            job = (await client.get(f"{JOBS}/{job['id']}", params={"update_status": "true"},
                                    headers=AUTH_A)).json()["job"]
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        assert job["status"] == "succeeded"
        assert job["fine_tuned_model"]
        assert len(emulator.jobs) == 1


async def test_provider_outage_keeps_last_good_state(
    settings: Settings, together: tuple[TogetherEmulator, str]
) -> None:
    emulator, url = together
    configured = replace(settings, together=ProviderCredentials(api_key=emulator.api_key, base_url=url))
    services = await Services.start(configured)
    try:
        stranded = await stranded_job(services)
        base = CreateJobBody(name="t", provider="TOGETHER_AI", model_name=TOGETHER_MODEL,
                             dataset_path=stranded.dataset_id or "")
        remote, _ = await services.jobs.create(TENANT, base)
        local, _ = await services.jobs.create(TENANT, msgspec.structs.replace(
            base, provider="SANDBOX", model_name="sandbox-chat-small"))
        emulator.faults.add("GET", r"^/v1/fine-tunes/", status=500, times=1000)
        async with services.database.session() as session:
            for job_id in (remote.id, local.id, stranded.id):
                row = await session.get(Job, job_id)
                assert row is not None
                row.next_sync_at = None
        await asyncio.sleep(0.4)  # the sandbox jobs' whole timelines have passed
        report = await services.sync.tick()
        assert set(report.job_ids) == {remote.id, local.id, stranded.id} and report.failed == 1
        after = await services.jobs.get(TENANT, remote.id)
        assert (after.status, after.provider_job_id) == (remote.status, remote.provider_job_id)
        assert after.sync_failures == 1 and after.next_sync_at is not None
        events = await services.jobs.events(TENANT, remote.id)
        assert events[-1].type == "retry" and "502" in events[-1].message
        assert (await services.jobs.get(TENANT, local.id)).status == "succeeded"
        assert (await services.jobs.get(TENANT, stranded.id)).provider_job_id is not None
    finally:
        await services.close()


async def test_two_replicas_share_the_work_without_overlap(fresh_postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=fresh_postgres_url, sandbox_step_seconds=0.0,
                        sync_interval_seconds=0)
    services = await Services.start(settings)
    try:
        job = await stranded_job(services)
        await services.sync.tick()
        template = await services.jobs.get(TENANT, job.id)
        async with services.database.session() as session:
            for i in range(200):
                session.add(Job(**{**template.model_dump(), "id": f"ftjob_replica{i:03d}", "status": "queued",
                                   "next_sync_at": None, "lease_owner": None, "lease_until": None,
                                   "idempotency_key": None}))
        replicas = [JobSync(services.database, services.providers, services.datasets.store, concurrency=4)
                    for _ in range(2)]
        reports = await asyncio.gather(*(replica.tick() for replica in replicas))
        first, second = (set(r.job_ids) for r in reports)
        replica_ids = {f"ftjob_replica{i:03d}" for i in range(200)}
        assert not first & second
        assert replica_ids <= first | second
        assert all(r.failed == 0 for r in reports)
    finally:
        await services.close()
