"""What dashboards poll is read through the driver and a version-keyed view cache; prove it never
serves a stale job, another tenant's job or a revoked key, whoever changed the database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlmodel import col

from finetune_service.auth import KeyStore
from finetune_service.db.engine import Database
from finetune_service.db.tables import ApiKey, Job, utcnow
from finetune_service.settings import Settings
from tests.api.helpers import eventually, uploaded_id
from tests.api.test_jobs import JOBS, job_body
from tests.conftest import AUTH_A, AUTH_B


@pytest.fixture
async def other_process(settings: Settings) -> AsyncIterator[Database]:
    """A second engine on the service's database, as another service process would have."""
    database = Database(settings.database_url)
    yield database
    await database.dispose()


async def test_a_job_changed_by_another_process_is_served_fresh(
    client: AsyncTestClient[Litestar], other_process: Database
) -> None:
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    first = await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)
    listed = await client.get(JOBS, headers=AUTH_A)
    assert first.json()["job"]["error"] is None
    async with other_process.session() as session:
        await session.execute(update(Job).where(col(Job.id) == job["id"]).values(
            error="changed elsewhere", version=col(Job.version) + 1, updated_at=utcnow()))
    again = await eventually(
        lambda: client.get(f"{JOBS}/{job['id']}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]}),
        lambda answer: answer.status_code != 304)
    assert again.status_code == 200 and again.json()["job"]["error"] == "changed elsewhere"
    assert again.headers["etag"] != first.headers["etag"]
    relisted = await client.get(JOBS, headers={**AUTH_A, "If-None-Match": listed.headers["etag"]})
    assert relisted.status_code == 200 and relisted.json()["jobs"][0]["error"] == "changed elsewhere"
    assert (await client.get(f"{JOBS}/{job['id']}", headers={
        **AUTH_A, "If-None-Match": again.headers["etag"]})).status_code == 304


async def test_a_cached_job_is_never_served_to_another_tenant(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    job = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    assert (await client.get(f"{JOBS}/{job['id']}", headers=AUTH_A)).status_code == 200
    stolen = await client.get(f"{JOBS}/{job['id']}", headers=AUTH_B)
    assert stolen.status_code == 404 and job["id"] in stolen.json()["detail"]
    foreign_cursor = await client.get(JOBS, params={"after": job["id"]}, headers=AUTH_B)
    assert foreign_cursor.status_code == 422 and "not a job of yours" in foreign_cursor.json()["detail"]


async def test_a_deleted_job_drops_out_of_lists_and_gets(
    client: AsyncTestClient[Litestar], other_process: Database
) -> None:
    dataset = await uploaded_id(client)
    ids = [(await client.post(JOBS, json=job_body(dataset, name=f"j{i}"), headers=AUTH_A)).json()["job"]["id"]
           for i in range(2)]
    assert (await client.get(JOBS, headers=AUTH_A)).json()["total"] == 2
    async with other_process.session() as session:
        row = await session.get(Job, ids[0])
        await session.delete(row)
    listing = (await eventually(lambda: client.get(JOBS, headers=AUTH_A),
                                lambda answer: answer.json()["total"] != 2)).json()
    assert listing["total"] == 1 and [j["id"] for j in listing["jobs"]] == [ids[1]]
    assert (await client.get(f"{JOBS}/{ids[0]}", headers=AUTH_A)).status_code == 404


async def test_stored_keys_authenticate_until_revoked(
    client: AsyncTestClient[Litestar], other_process: Database
) -> None:
    row, key = await KeyStore(other_process, {}).create("tenant-stored", name="dashboard")
    auth = {"Authorization": f"Bearer {key}"}
    assert (await client.get(JOBS, headers=auth)).json()["total"] == 0
    async with other_process.session() as session:
        await session.execute(update(ApiKey).where(col(ApiKey.id) == row.id).values(revoked=True))
    refused = await eventually(lambda: client.get(JOBS, headers=auth), lambda answer: answer.status_code != 200)
    assert refused.status_code == 401 and "Invalid API key" in refused.json()["detail"]


async def test_task_finetunes_page_with_a_cursor(client: AsyncTestClient[Litestar]) -> None:
    project = (await client.post("/api/finetune/projects", json={"name": "p"}, headers=AUTH_A)).json()["project"]
    task = (await client.post(f"/api/finetune/projects/{project['id']}/tasks", json={"name": "t"},
                              headers=AUTH_A)).json()["task"]
    base = f"/api/finetune/projects/{project['id']}/tasks/{task['id']}/finetunes"
    dataset = await uploaded_id(client)
    ids = [(await client.post(base, json=job_body(dataset, name=f"f{i}"), headers=AUTH_A)).json()["job"]["id"]
           for i in range(3)]
    first = (await client.get(base, params={"limit": 2}, headers=AUTH_A)).json()
    assert first["total"] == 3 and first["has_more"] is True
    rest = (await client.get(base, params={"limit": 2, "after": first["next_cursor"]}, headers=AUTH_A)).json()
    assert [j["id"] for j in first["jobs"] + rest["jobs"]] == ids[::-1] and rest["next_cursor"] is None
