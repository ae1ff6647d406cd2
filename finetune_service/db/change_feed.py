"""What polling asks most, answered from memory on PostgreSQL, kept current by LISTEN/NOTIFY.

Dashboards ask "which version is job X at?" and "whose key is this?" on every request. Each is an
indexed query, but at a few thousand requests a second the round trips (a socket write, a backend
wake-up, a reply) took a quarter of a service process's CPU and most of the database's.

Triggers (installed by migration 0009) send one notification per committed change: a job's new
version (or its deletion), or "some key changed". Each process listens on one connection and keeps:
- `jobs`: job id -> (tenant, version), filled on first read and moved forward by notifications.
  Versions only grow, so a read that raced a notification never moves an entry back; a deleted
  job stays as a tombstone so a read that started before the delete cannot bring it back.
- `keys`: key hash -> (key id, tenant) of active keys, emptied by any key change.
- `lists`: pages of a tenant's unfiltered job list (newest first). A job's update never moves it
  there (the order is by creation), so an update only patches its version on the pages that show
  it; a new or deleted job drops the tenant's pages.

The memory is trusted only while the listening connection is up. When it drops, notifications
may have been missed, so everything is forgotten and reads go to the database until listening
again. Entries read while not listening, or read across a drop, are not kept (the generation a
read takes before it starts must still be current when it ends).

A process's own commits update the memory directly (`Database` hooks them), so a client that
changes a job and reads it back at once sees its change. Another process's change is seen once
its notification arrives: normally well under a millisecond after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, replace

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from finetune_service.db.job_lists import JobFilter, JobIndex
from finetune_service.db.tables import ApiKey, Job

log = logging.getLogger(__name__)

CHANNEL = "finetune_changes"
# How the listening connections show in pg_stat_activity.
APPLICATION_NAME = "finetune-service change feed"
CAPACITY = 100_000
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
# The connection is checked this often even when the server never tells us it went away.
HEARTBEAT_SECONDS = 5.0
DELETED = -1
# How a job changed, as the notification's first field: lower(left(TG_OP, 1)).
INSERT, UPDATE, DELETE = "i", "u", "d"
# Page shapes remembered per tenant, and tenants with remembered pages, before starting over.
LISTS_PER_TENANT = 64
TENANTS_WITH_LISTS = 1_000
_JOB_CHANGES = "change_feed_jobs"
_KEYS_CHANGED = "change_feed_keys"

_FUNCTION = f"""
CREATE OR REPLACE FUNCTION finetune_notify_change() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('{CHANNEL}', 'k');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{CHANNEL}', '{DELETE}|{DELETED}|' || OLD.id || '|' || OLD.tenant_id);
    ELSE
        PERFORM pg_notify('{CHANNEL}',
                          lower(left(TG_OP, 1)) || '|' || NEW.version || '|' || NEW.id || '|' || NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
# Leases and sync bookkeeping update jobs without a visible change; only a new version notifies.
_TRIGGERS = (
    "CREATE TRIGGER jobs_notify_insert_delete AFTER INSERT OR DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION finetune_notify_change()",
    "CREATE TRIGGER jobs_notify_version AFTER UPDATE ON jobs FOR EACH ROW "
    "WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION finetune_notify_change()",
    "CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys "
    "FOR EACH STATEMENT EXECUTE FUNCTION finetune_notify_change()",
)


def install(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(_FUNCTION)
    for trigger in _TRIGGERS:
        connection.exec_driver_sql(trigger)


def uninstall(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql("DROP TRIGGER IF EXISTS jobs_notify_insert_delete ON jobs")
    connection.exec_driver_sql("DROP TRIGGER IF EXISTS jobs_notify_version ON jobs")
    connection.exec_driver_sql("DROP TRIGGER IF EXISTS api_keys_notify ON api_keys")
    connection.exec_driver_sql("DROP FUNCTION IF EXISTS finetune_notify_change()")


@dataclass(frozen=True)
class KnownJob:
    tenant_id: str
    version: int  # DELETED once the job is gone

    def version_for(self, tenant_id: str) -> int | None:
        return self.version if self.tenant_id == tenant_id and self.version != DELETED else None


class ChangeFeed:
    def __init__(self, dsn: str, capacity: int = CAPACITY) -> None:
        self._dsn = dsn
        self._capacity = capacity
        self._jobs: dict[str, KnownJob] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._lists: dict[str, dict[tuple[int, str | None], JobIndex]] = {}
        # Job changes seen per tenant: a page read while one of them happened is not kept.
        self._changes: dict[str, int] = {}
        # Bumped whenever what a read in flight would bring back may already be stale.
        self._generation = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="change-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._forget(listening=False)

    def generation(self) -> int | None:
        """Take before a database read; pass to `remember_*` to keep what it read."""
        return self._generation if self._listening else None

    def list_stamp(self, tenant_id: str) -> tuple[int, int] | None:
        """Take before reading a page of the tenant's jobs; pass to `remember_list`."""
        return (self._generation, self._changes.get(tenant_id, 0)) if self._listening else None

    def job(self, job_id: str) -> KnownJob | None:
        return self._jobs.get(job_id) if self._listening else None

    def key(self, key_hash: str) -> tuple[str, str] | None:
        return self._keys.get(key_hash) if self._listening else None

    def job_list(self, tenant_id: str, query: JobFilter) -> JobIndex | None:
        if not self._listening or not query.by_age_only:
            return None
        return self._lists.get(tenant_id, {}).get((query.limit, query.after))

    def remember_job(self, generation: int | None, job_id: str, tenant_id: str, version: int) -> None:
        if generation is None or generation != self._generation or not self._listening:
            return
        known = self._jobs.get(job_id)
        if known is None:
            if len(self._jobs) >= self._capacity:
                del self._jobs[next(iter(self._jobs))]
            self._jobs[job_id] = KnownJob(tenant_id, version)
        elif known.version != DELETED and (version == DELETED or version > known.version):
            self._jobs[job_id] = KnownJob(tenant_id, version)

    def remember_key(self, generation: int | None, key_hash: str, key_id: str, tenant_id: str) -> None:
        if generation is not None and generation == self._generation and self._listening:
            if len(self._keys) >= self._capacity:
                self._keys.clear()
            self._keys[key_hash] = (key_id, tenant_id)

    def remember_list(self, stamp: tuple[int, int] | None, tenant_id: str, query: JobFilter, index: JobIndex) -> None:
        if stamp is None or stamp != self.list_stamp(tenant_id) or not query.by_age_only:
            return
        for entry_id, version in index.entries:
            self.remember_job(stamp[0], entry_id, tenant_id, version)
        if tenant_id not in self._lists and len(self._lists) >= TENANTS_WITH_LISTS:
            self._lists.clear()
        pages = self._lists.setdefault(tenant_id, {})
        if len(pages) >= LISTS_PER_TENANT:
            pages.clear()
        pages[(query.limit, query.after)] = index

    def job_changed(self, how: str, job_id: str, tenant_id: str, version: int) -> None:
        """A committed change to a job, announced or made by this process."""
        self.remember_job(self._generation, job_id, tenant_id, DELETED if how == DELETE else version)
        self._changes[tenant_id] = self._changes.get(tenant_id, 0) + 1
        pages = self._lists.get(tenant_id)
        if not pages:
            return
        if how != UPDATE:
            del self._lists[tenant_id]
            return
        for shape, index in list(pages.items()):
            for position, (entry_id, known_version) in enumerate(index.entries):
                if entry_id == job_id:
                    if version > known_version:
                        entries = list(index.entries)
                        entries[position] = (job_id, version)
                        pages[shape] = replace(index, entries=entries)
                    break

    def keys_changed(self) -> None:
        self._keys.clear()
        # A key read that started before this change must not be kept.
        self._generation += 1

    def _on_notification(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "k":
            self.keys_changed()
            return
        how, version, job_id, tenant_id = payload.split("|", 3)
        self.job_changed(how, job_id, tenant_id, int(version))

    def _forget(self, *, listening: bool) -> None:
        self._jobs.clear()
        self._keys.clear()
        self._lists.clear()
        self._changes.clear()
        self._generation += 1
        self._listening = listening

    def _lost(self, dropped: asyncio.Event, _connection: object = None) -> None:
        if not dropped.is_set():
            dropped.set()
            self._forget(listening=False)

    async def _listen(self) -> None:
        failures = 0
        while True:
            connection: asyncpg.Connection | None = None
            dropped = asyncio.Event()
            try:
                connection = await asyncpg.connect(self._dsn, server_settings={"application_name": APPLICATION_NAME})
                connection.add_termination_listener(functools.partial(self._lost, dropped))
                await connection.add_listener(CHANNEL, self._on_notification)
                # Only now can no change be missed; what was remembered before may be stale.
                self._forget(listening=True)
                failures = 0
                while not dropped.is_set():
                    # A connection whose server vanished without a word is found by asking.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(dropped.wait(), HEARTBEAT_SECONDS)
                    if not dropped.is_set():
                        await asyncio.wait_for(connection.execute("SELECT 1"), HEARTBEAT_SECONDS)
                raise ConnectionError("the listening connection closed")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                if failures == 0:
                    log.warning("change feed: not listening (%s); reading from the database", error)
            finally:
                self._lost(dropped)
                if connection is not None:
                    connection.terminate()
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
            failures += 1


def follow_commits(session_class: type[Session], feed: ChangeFeed) -> None:
    """Bring `feed` up to date with this process's own commits as soon as they are made, so a
    change reads back at once here without waiting for its notification."""

    def collect(session: Session, _context: object) -> None:
        changes: dict[str, tuple[str, str, int]] = session.info.setdefault(_JOB_CHANGES, {})
        for how, rows in ((INSERT, session.new), (UPDATE, session.dirty), (DELETE, session.deleted)):
            for row in rows:
                if isinstance(row, Job):
                    earlier = changes.get(row.id)
                    # Inserted and then updated in one transaction is still new to everyone else.
                    kept = earlier[0] if earlier is not None and how == UPDATE else how
                    changes[row.id] = (kept, row.tenant_id, row.version)
                elif isinstance(row, ApiKey):
                    session.info[_KEYS_CHANGED] = True

    def publish(session: Session) -> None:
        changes: dict[str, tuple[str, str, int]] = session.info.pop(_JOB_CHANGES, {})
        if session.info.pop(_KEYS_CHANGED, False):
            feed.keys_changed()
        for job_id, (how, tenant_id, version) in changes.items():
            feed.job_changed(how, job_id, tenant_id, version)

    def discard(session: Session) -> None:
        session.info.pop(_JOB_CHANGES, None)
        session.info.pop(_KEYS_CHANGED, None)

    event.listen(session_class, "after_flush", collect)
    event.listen(session_class, "after_commit", publish)
    event.listen(session_class, "after_rollback", discard)
