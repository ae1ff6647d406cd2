"""PostgreSQL: job versions and API keys answered from memory stay right whoever changes the
database, and are forgotten whenever a change could have been missed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlmodel import col

from finetune_service.app import create_app
from finetune_service.auth import KeyStore, hash_key
from finetune_service.db import change_feed
from finetune_service.db.change_feed import ChangeFeed
from finetune_service.db.engine import Database
from finetune_service.db.job_lists import JobFilter, JobIndex
from finetune_service.db.polling_reads import PostgresPollingReads
from finetune_service.db.tables import ApiKey, Job, utcnow
from finetune_service.services.job_state import touch
from finetune_service.settings import Settings
from tests.api.helpers import uploaded_id
from tests.api.test_jobs import JOBS, job_body
from tests.conftest import ADMIN_URL, AUTH_A

WAIT_SECONDS = 5.0


@pytest.fixture
def database_url(fresh_postgres_url: str) -> str:
    return fresh_postgres_url


@pytest.fixture
async def other_process(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.dispose()


def feed_of(app: Litestar) -> ChangeFeed:
    polling = app.state.services.database.polling
    assert isinstance(polling, PostgresPollingReads) and polling.feed is not None
    return polling.feed


async def listening_feed(client: AsyncTestClient[Litestar], app: Litestar) -> ChangeFeed:
    """The app's feed once it listens (it starts with the first poll)."""
    feed = feed_of(app)
    await client.get(JOBS, headers=AUTH_A)
    await until(lambda: feed.listening, "the feed listens")
    return feed


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {WAIT_SECONDS}s: {what}"
        await asyncio.sleep(0.01)


def version_known(feed: ChangeFeed, job_id: str) -> int | None:
    known = feed.job(job_id)
    return known.version if known is not None else None


async def a_job(client: AsyncTestClient[Litestar]) -> dict[str, object]:
    dataset = await uploaded_id(client)
    job: dict[str, object] = (await client.post(JOBS, json=job_body(dataset), headers=AUTH_A)).json()["job"]
    return job


async def bump(database: Database, job_id: str, error: str) -> None:
    async with database.session() as session:
        await session.execute(update(Job).where(col(Job.id) == job_id).values(
            error=error, version=col(Job.version) + 1, updated_at=utcnow()))


async def version_of(database: Database, job_id: str) -> int:
    async with database.session() as session:
        row = await session.get(Job, job_id)
        assert row is not None
        return row.version


async def test_versions_come_from_memory_and_follow_other_processes(
    client: AsyncTestClient[Litestar], app: Litestar, other_process: Database
) -> None:
    feed = await listening_feed(client, app)
    job = await a_job(client)
    job_id = str(job["id"])
    version = await version_of(other_process, job_id)
    known = feed.job(job_id)
    assert known is not None and known.version_for("tenant-a") == version
    assert known.version_for("tenant-b") is None
    first = await client.get(f"{JOBS}/{job_id}", headers=AUTH_A)
    await bump(other_process, job_id, "changed elsewhere")
    await until(lambda: version_known(feed, job_id) == version + 1, "the other process's change is announced")
    again = await client.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 200 and again.json()["job"]["error"] == "changed elsewhere"
    # A lease taken by a scheduler changes no version and announces nothing.
    async with other_process.session() as session:
        await session.execute(update(Job).where(col(Job.id) == job_id).values(lease_owner="elsewhere"))
    assert (await client.get(f"{JOBS}/{job_id}", headers={
        **AUTH_A, "If-None-Match": again.headers["etag"]})).status_code == 304


async def test_a_job_deleted_elsewhere_stays_gone(
    client: AsyncTestClient[Litestar], app: Litestar, other_process: Database
) -> None:
    feed = await listening_feed(client, app)
    job_id = str((await a_job(client))["id"])
    assert (await client.get(f"{JOBS}/{job_id}", headers=AUTH_A)).status_code == 200
    async with other_process.session() as session:
        await session.delete(await session.get(Job, job_id))
    await until(lambda: version_known(feed, job_id) == change_feed.DELETED, "the delete is announced")
    # A read that started before the delete cannot bring the job back.
    feed.remember_job(feed.generation(), job_id, "tenant-a", 99)
    assert (await client.get(f"{JOBS}/{job_id}", headers=AUTH_A)).status_code == 404


async def test_a_key_revoked_elsewhere_stops_working(
    client: AsyncTestClient[Litestar], app: Litestar, other_process: Database
) -> None:
    feed = feed_of(app)
    row, key = await KeyStore(other_process, {}).create("tenant-stored")
    auth = {"Authorization": f"Bearer {key}"}
    assert (await client.get(JOBS, headers=auth)).status_code == 200
    await until(lambda: feed.listening, "the feed listens")
    assert (await client.get(JOBS, headers=auth)).status_code == 200
    assert feed.key(hash_key(key)) == (row.id, "tenant-stored")
    async with other_process.session() as session:
        await session.execute(update(ApiKey).where(col(ApiKey.id) == row.id).values(revoked=True))
    await until(lambda: feed.key(hash_key(key)) is None, "the revocation is announced")
    refused = await client.get(JOBS, headers=auth)
    assert refused.status_code == 401 and "Invalid API key" in refused.json()["detail"]


async def test_a_dropped_listener_forgets_everything_and_listens_again(
    client: AsyncTestClient[Litestar], app: Litestar, other_process: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long enough that the change below certainly happens while nobody listens.
    monkeypatch.setattr(change_feed, "RECONNECT_SECONDS", (1.0,))
    feed = await listening_feed(client, app)
    job_id = str((await a_job(client))["id"])
    first = await client.get(f"{JOBS}/{job_id}", headers=AUTH_A)
    assert feed.job(job_id) is not None
    database = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = $2", change_feed.APPLICATION_NAME, database)
    finally:
        await admin.close()
    assert killed == 1
    await until(lambda: not feed.listening, "the drop is noticed")
    # No notification of this change can reach us.
    await bump(other_process, job_id, "changed while deaf")
    assert not feed.listening
    deaf_version = await version_of(other_process, job_id)
    deaf = await client.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
    assert deaf.status_code == 200 and deaf.json()["job"]["error"] == "changed while deaf"
    await until(lambda: feed.listening, "the feed listens again")
    after = await client.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
    assert after.status_code == 200 and after.json()["job"]["error"] == "changed while deaf"
    await bump(other_process, job_id, "changed after")
    await until(lambda: version_known(feed, job_id) == deaf_version + 1, "the change after is announced")
    latest = await client.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": after.headers["etag"]})
    assert latest.status_code == 200 and latest.json()["job"]["error"] == "changed after"


async def test_own_commits_are_known_before_any_notification(
    client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    # The feed listens on another database, so nothing it learns can come from a notification.
    feed = ChangeFeed(ADMIN_URL)
    engine = create_async_engine(settings.database_url)
    session_class = type("HookedSession", (Session,), {})
    sessions = async_sessionmaker(engine, expire_on_commit=False, sync_session_class=session_class)
    change_feed.follow_commits(session_class, feed)
    feed.start()
    try:
        await until(lambda: feed.listening, "the feed listens")
        job = Job(tenant_id="t", name="j", provider="SANDBOX", base_model="m", split_name="train",
                  format_type="openai_chat_jsonl", data_strategy="final_only", status="queued")
        async with sessions() as session:
            session.add(job)
            await session.commit()
        assert version_known(feed, job.id) == 1
        # A committed change is known; one flushed and then rolled back is not.
        for commit in (True, False):
            async with sessions() as session:
                row = await session.get(Job, job.id)
                assert row is not None
                touch(row)
                await session.flush()
                await (session.commit() if commit else session.rollback())
            assert version_known(feed, job.id) == 2
        feed.remember_key(feed.generation(), "hash", "key-id", "t")
        async with sessions() as session:
            session.add(ApiKey(tenant_id="t", key_hash="another", prefix="x"))
            await session.delete(await session.get(Job, job.id))
            await session.commit()
        assert version_known(feed, job.id) == change_feed.DELETED and feed.key("hash") is None
    finally:
        await feed.close()
        await engine.dispose()


async def test_list_pages_come_from_memory_and_follow_changes(
    client: AsyncTestClient[Litestar], app: Litestar, other_process: Database
) -> None:
    feed = await listening_feed(client, app)
    dataset = await uploaded_id(client)
    ids = [(await client.post(JOBS, json=job_body(dataset, name=f"j{i}"), headers=AUTH_A)).json()["job"]["id"]
           for i in range(2)]
    page = JobFilter()
    first = await client.get(JOBS, headers=AUTH_A)
    remembered = feed.job_list("tenant-a", page)
    assert remembered is not None and [job_id for job_id, _ in remembered.entries] == ids[::-1]
    version = await version_of(other_process, ids[0])
    await bump(other_process, ids[0], "changed elsewhere")

    def listed_version() -> int | None:
        known = feed.job_list("tenant-a", page)
        return dict(known.entries).get(ids[0]) if known is not None else None

    await until(lambda: listed_version() == version + 1, "the update is patched into the page")
    again = await client.get(JOBS, headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 200 and again.json()["jobs"][1]["error"] == "changed elsewhere"
    # A new job changes the total and the first page: the tenant's pages are dropped, not patched.
    async with other_process.session() as session:
        session.add(await copied_job(session, ids[0], "ftjob_elsewhere"))
    await until(lambda: feed.job_list("tenant-a", page) is None, "the insert drops the pages")
    relisted = (await client.get(JOBS, headers=AUTH_A)).json()
    assert relisted["total"] == 3 and "ftjob_elsewhere" in [job["id"] for job in relisted["jobs"]]
    # A filter on something a change can alter is never answered from memory.
    assert (await client.get(JOBS, params={"status": "queued"}, headers=AUTH_A)).status_code == 200
    assert feed.job_list("tenant-a", JobFilter(status="queued")) is None
    # A page read while one of the tenant's jobs changed is not kept.
    stamp = feed.list_stamp("tenant-a")
    feed.job_changed(change_feed.UPDATE, ids[1], "tenant-a", 10_000)
    feed.remember_list(stamp, "tenant-a", JobFilter(limit=7), JobIndex(entries=[], total=0, has_more=False))
    assert feed.job_list("tenant-a", JobFilter(limit=7)) is None


async def copied_job(session: AsyncSession, job_id: str, new_id: str) -> Job:
    row = await session.get(Job, job_id)
    assert row is not None
    return Job.model_validate({**row.model_dump(), "id": new_id, "created_at": utcnow(), "updated_at": utcnow(),
                               "idempotency_key": None})


async def silent_bump(settings: Settings, job_id: str, error: str) -> None:
    """A change that announces nothing (triggers off for the session), as every change looks to a
    process whose LISTEN goes through a pooler in transaction mode."""
    connection = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("UPDATE jobs SET error = $1, version = version + 1 WHERE id = $2", error, job_id)
    finally:
        await connection.close()


async def test_with_the_feed_off_every_poll_reads_the_database(settings: Settings, client: AsyncTestClient[Litestar],
                                                                app: Litestar) -> None:
    await listening_feed(client, app)
    job_id = str((await a_job(client))["id"])
    first = await client.get(f"{JOBS}/{job_id}", headers=AUTH_A)
    await silent_bump(settings, job_id, "changed unannounced")
    # With the feed, memory keeps the old version: the poll answers 304.
    stale = await client.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
    assert stale.status_code == 304

    unfed = create_app(dataclasses.replace(settings, change_feed=False))  # FINETUNE_CHANGE_FEED=false
    async with AsyncTestClient(unfed) as other:
        polling = unfed.state.services.database.polling
        assert isinstance(polling, PostgresPollingReads) and polling.feed is None
        seen = await other.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": first.headers["etag"]})
        assert seen.status_code == 200 and seen.json()["job"]["error"] == "changed unannounced"
        await silent_bump(settings, job_id, "changed again")
        again = await other.get(f"{JOBS}/{job_id}", headers={**AUTH_A, "If-None-Match": seen.headers["etag"]})
        assert again.status_code == 200 and again.json()["job"]["error"] == "changed again"
        listed = (await other.get(JOBS, headers=AUTH_A)).json()
        assert [j["error"] for j in listed["jobs"] if j["id"] == job_id] == ["changed again"]
        listeners = await _listeners(settings)
    assert listeners == 1  # only the first app's feed listens


async def _listeners(settings: Settings) -> int:
    connection = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            "finetune-service change feed")
        return count
    finally:
        await connection.close()
