"""The few reads dashboards repeat all day, run straight on the database driver.

Polling asks two questions far more often than anything else: "which version is job X at?" (so an
unchanged job answers 304) and "which jobs, at which versions, are on this page?". Through
SQLAlchemy's async engine each costs ~400-600 µs of CPU (pool checkout, greenlet switches and, on
SQLite, one thread hop per driver call); on the driver it costs ~4 µs (sqlite3) or ~40 µs (asyncpg,
prepared). `benchmarks/bench_load.py` measures the difference end to end. Everything else, writes
included, keeps going through the ORM.

SQLite: one stdlib connection used on the event loop thread. The queries are index lookups that
finish in microseconds, WAL readers never wait for the writer, and a thread hop would cost more
than the query. PostgreSQL: a small asyncpg pool of its own.

A changed job still has to be loaded whole (`jobs`), and that goes through the ORM for its column
types. On SQLite it runs in a synchronous session on the same event-loop connection: through
aiosqlite it took five or six thread hops, and under load (the scheduler's writes keep other
aiosqlite threads busy) each hop waited its turn, so polled reads stalled for 0.3-2 s. On
PostgreSQL asyncpg needs no threads, so an async session serves, on a small engine of its own.

PostgreSQL also answers job versions, API keys and unfiltered job list pages from memory, kept
current by LISTEN/NOTIFY (`change_feed.py`); what memory lacks is read here.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import Select, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool
from sqlmodel import col

from finetune_service.db.change_feed import ChangeFeed
from finetune_service.db.job_lists import FILTER_COLUMNS, CursorNotFound, JobFilter, JobIndex
from finetune_service.db.tables import Job

# A reader never waits long for a lock it should never meet: WAL readers are only ever held up by
# crash recovery or an exclusive checkpoint, and then the request is better off as a quick 503.
SQLITE_BUSY_MILLISECONDS = 100
POOL_SIZE = 4


class PollingReads(ABC):
    @abstractmethod
    async def _one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None: ...

    @abstractmethod
    async def _all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def scalars(self, statement: Select[Any]) -> list[Any]:
        """A SELECT built with SQLAlchemy (so its column types are handled), rows' first column;
        ORM objects come back detached."""

    async def jobs(self, tenant_id: str, job_ids: Sequence[str]) -> list[Job]:
        """The tenant's jobs among `job_ids`, whole; missing or foreign ids are left out."""
        return await self.scalars(select(Job).where(col(Job.tenant_id) == tenant_id, col(Job.id).in_(list(job_ids))))

    async def job_version(self, tenant_id: str, job_id: str) -> int | None:
        row = await self._one("SELECT version FROM jobs WHERE id = ? AND tenant_id = ?", (job_id, tenant_id))
        return int(row[0]) if row is not None else None

    async def active_api_key(self, key_hash: str) -> tuple[str, str] | None:
        """(key id, tenant id) of the unrevoked key with this hash."""
        row = await self._one("SELECT id, tenant_id FROM api_keys WHERE key_hash = ? AND revoked = ?",
                              (key_hash, False))
        return (str(row[0]), str(row[1])) if row is not None else None

    async def job_index(self, tenant_id: str, query: JobFilter) -> JobIndex:
        # Only column names from FILTER_COLUMNS and fixed fragments go into the SQL text; every value
        # is a bound parameter.
        conditions, params = ["tenant_id = ?"], [tenant_id]
        for column in FILTER_COLUMNS:
            value = getattr(query, column)
            if value:
                conditions.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(conditions)
        count = await self._one(f"SELECT count(*) FROM jobs WHERE {where}", params)  # noqa: S608
        page_conditions, page_params = [where], list(params)
        if query.after:
            anchor = await self._one("SELECT created_at, id FROM jobs WHERE id = ? AND tenant_id = ?",
                                     (query.after, tenant_id))
            if anchor is None:
                raise CursorNotFound(query.after)
            # Newest first means "after the cursor" is older, or as old with a smaller id.
            page_conditions.append("(created_at < ? OR (created_at = ? AND id < ?))")
            page_params += [anchor[0], anchor[0], anchor[1]]
        rows = await self._all(
            f"SELECT id, version FROM jobs WHERE {' AND '.join(page_conditions)} "  # noqa: S608
            "ORDER BY created_at DESC, id DESC LIMIT ?", [*page_params, query.limit + 1])
        entries = [(str(row[0]), int(row[1])) for row in rows]
        return JobIndex(entries=entries[: query.limit], total=int(count[0]) if count else 0,
                        has_more=len(entries) > query.limit)


class SqlitePollingReads(PollingReads):
    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._orm = create_engine("sqlite://", creator=self._connect, poolclass=StaticPool)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return self._connection

    async def _one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._connect().execute(sql, params).fetchone()
        return row

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(self._connect().execute(sql, params).fetchall())

    async def scalars(self, statement: Select[Any]) -> list[Any]:
        with Session(self._orm) as session:
            return list(session.scalars(statement))

    async def close(self) -> None:
        self._orm.dispose()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, ...`."""
    counter = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


async def _nothing_to_reset(_connection: asyncpg.Connection) -> None:
    """These connections only ever run single SELECTs: no session state, locks or listeners to
    clear, so skip asyncpg's default reset query (a round trip on every release)."""


class PostgresPollingReads(PollingReads):
    """Job versions, API keys and unfiltered list pages come from the change feed's memory when it
    has them; without a feed (``change_feed=False``) every poll reads the database."""

    def __init__(self, url: str, change_feed: bool = True) -> None:
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        # Whole jobs are loaded without a transaction (one round trip, not BEGIN, SELECT, ROLLBACK)
        # on a few connections kept open: a burst of changed jobs waits its turn for one rather
        # than opening new connections, which cost the database a process each.
        self._orm = create_async_engine(url, isolation_level="AUTOCOMMIT", pool_size=POOL_SIZE, max_overflow=0)
        self._sessions = async_sessionmaker(self._orm, expire_on_commit=False)
        self.feed = ChangeFeed(self._dsn) if change_feed else None
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._statements: dict[str, str] = {}

    async def _acquire_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=POOL_SIZE,
                                                           reset=_nothing_to_reset)
        return self._pool

    def _sql(self, sql: str) -> str:
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = _numbered(sql)
        return statement

    async def _one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        pool = await self._acquire_pool()
        row: Sequence[Any] | None = await pool.fetchrow(self._sql(sql), *params)
        return row

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        pool = await self._acquire_pool()
        return list(await pool.fetch(self._sql(sql), *params))

    async def scalars(self, statement: Select[Any]) -> list[Any]:
        async with self._sessions() as session:
            return list(await session.scalars(statement))

    def _started_feed(self) -> ChangeFeed | None:
        if self.feed is not None:
            self.feed.start()
        return self.feed

    async def job_version(self, tenant_id: str, job_id: str) -> int | None:
        feed = self._started_feed()
        if feed is None:
            return await super().job_version(tenant_id, job_id)
        known = feed.job(job_id)
        if known is not None:
            return known.version_for(tenant_id)
        generation = feed.generation()
        row = await self._one("SELECT version, tenant_id FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            return None
        feed.remember_job(generation, job_id, str(row[1]), int(row[0]))
        return int(row[0]) if row[1] == tenant_id else None

    async def active_api_key(self, key_hash: str) -> tuple[str, str] | None:
        feed = self._started_feed()
        if feed is None:
            return await super().active_api_key(key_hash)
        known = feed.key(key_hash)
        if known is not None:
            return known
        generation = feed.generation()
        found = await super().active_api_key(key_hash)
        if found is not None:
            feed.remember_key(generation, key_hash, *found)
        return found

    async def job_index(self, tenant_id: str, query: JobFilter) -> JobIndex:
        feed = self._started_feed()
        if feed is None:
            return await super().job_index(tenant_id, query)
        known = feed.job_list(tenant_id, query)
        if known is not None:
            return known
        stamp = feed.list_stamp(tenant_id)
        index = await super().job_index(tenant_id, query)
        feed.remember_list(stamp, tenant_id, query, index)
        return index

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        await self._orm.dispose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def polling_reads_for(url: str, change_feed: bool = True) -> PollingReads:
    """From the SQLAlchemy URL the engine uses (sqlite+aiosqlite:///path or postgresql+asyncpg://...)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqlitePollingReads(parsed.database or "")
    return PostgresPollingReads(url, change_feed)
