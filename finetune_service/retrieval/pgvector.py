"""Optional pgvector ANN index for the vector half of hybrid search (PostgreSQL only).

When the connected PostgreSQL offers the `vector` extension, migration 0007 (or, if the extension
appears later, the first search/index on a running service) creates it and a side table

    retrieval_chunk_vectors(seq -> retrieval_chunks.seq ON DELETE CASCADE, collection_id, dimensions,
                            embedding vector)

filled at indexing time in the same transaction as the chunks. Collections may use models of
different sizes, so `embedding` has no fixed size; each size gets its own partial HNSW index on
`(embedding::vector(d)) vector_cosine_ops WHERE dimensions = d`, created the first time a
collection of that size is indexed. Deleting a chunk (or its document, collection or folder)
deletes its vector through the foreign key, in the same statement. Without the extension (or for
more than MAX_DIMENSIONS dimensions) nothing here is used and search stays exact.

Every function takes a synchronous SQLAlchemy `Connection` so the migration and the async
service (through `run_sync`) share one implementation. SQL text is formatted only with this
module's constants and int() dimensions; every value from outside is a bound parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

TABLE = "retrieval_chunk_vectors"
# HNSW indexes the `vector` type up to 2,000 dimensions; larger collections stay on exact search.
MAX_DIMENSIONS = 2000
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000
_LOCK_KEY = 0x70677663  # pg_advisory_xact_lock key serialising this module's DDL ("pgvc")
_BATCH = 5000


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def extension_available(connection: Connection) -> bool:
    """The server can `CREATE EXTENSION vector` (it ships the files; privileges are checked later)."""
    return is_postgres(connection) and connection.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is not None


def installed(connection: Connection) -> bool:
    """The extension and the side table exist (so the ANN path may be used)."""
    if not is_postgres(connection):
        return False
    row = connection.execute(text(
        "SELECT to_regclass(:table) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')"
    ), {"table": TABLE}).scalar()
    return bool(row)


def extension_version(connection: Connection) -> tuple[int, ...]:
    version = connection.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    return tuple(int(p) for p in str(version or "0").split(".") if p.isdigit())


def indexable(dimensions: int | None) -> bool:
    return dimensions is not None and 1 <= dimensions <= MAX_DIMENSIONS


def index_name(dimensions: int) -> str:
    return f"ix_{TABLE}_hnsw_{int(dimensions)}"


def install(connection: Connection) -> bool:
    """Create the extension, the side table and its indexes, and copy in the vectors of existing chunks.

    Idempotent; does nothing (False) off PostgreSQL, without the extension, or when this role may not
    create it (the transaction stays usable: the attempt runs in a savepoint)."""
    if not extension_available(connection):
        return False
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    if installed(connection):
        return True
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as error:
        log.warning("pgvector is available but cannot be enabled (%s); retrieval keeps exact vector search",
                    str(error.orig).strip().splitlines()[0] if error.orig else error)
        return False
    connection.execute(text(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        " seq integer PRIMARY KEY REFERENCES retrieval_chunks (seq) ON DELETE CASCADE,"
        " collection_id varchar NOT NULL,"
        " dimensions integer NOT NULL,"
        " embedding vector NOT NULL)"))
    connection.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_collection_id ON {TABLE} (collection_id)"))
    _backfill(connection)
    return True


def _backfill(connection: Connection) -> None:
    """Vectors of chunks stored before the side table existed (exact search read them from bytes)."""
    after = 0
    while True:
        rows = connection.execute(text(
            "SELECT c.seq, c.collection_id, k.dimensions, c.embedding FROM retrieval_chunks AS c "
            "JOIN retrieval_collections AS k ON k.id = c.collection_id "
            "WHERE c.seq > :after ORDER BY c.seq LIMIT :n"), {"after": after, "n": _BATCH}).all()
        if not rows:
            return
        after = int(rows[-1][0])
        batch = [{"seq": int(seq), "collection_id": cid, "dimensions": int(dims),
                  "embedding": np.frombuffer(blob, dtype="<f4").tolist()}
                 for seq, cid, dims, blob in rows if indexable(dims) and len(blob) == 4 * int(dims)]
        for dims in sorted({row["dimensions"] for row in batch}):
            ensure_index(connection, dims)
        if batch:
            connection.execute(text(
                f"INSERT INTO {TABLE} (seq, collection_id, dimensions, embedding) "  # noqa: S608 (constants and int() only)
                "VALUES (:seq, :collection_id, :dimensions, CAST(CAST(:embedding AS real[]) AS vector)) "
                "ON CONFLICT (seq) DO NOTHING"), batch)


def uninstall(connection: Connection) -> None:
    """Drop the side table (the extension stays: other schemas may use it)."""
    if is_postgres(connection):
        connection.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))


def ensure_index(connection: Connection, dimensions: int) -> None:
    """The partial HNSW (cosine) index for vectors of `dimensions` values."""
    dims = int(dimensions)
    if not indexable(dims):
        return
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    connection.execute(text(
        f"CREATE INDEX IF NOT EXISTS {index_name(dims)} ON {TABLE} "
        f"USING hnsw ((embedding::vector({dims})) vector_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE dimensions = {dims}"))


def add_vectors(connection: Connection, chunk_ids: Sequence[str], vectors: np.ndarray) -> None:
    """Store the vectors of just-inserted chunks (row i of `vectors` belongs to `chunk_ids[i]`)."""
    if not len(chunk_ids):
        return
    dims = int(vectors.shape[1])
    if not indexable(dims):
        return
    rows = [{"id": chunk_id, "embedding": row} for chunk_id, row in zip(chunk_ids, vectors.tolist(), strict=True)]
    statement = text(
        f"INSERT INTO {TABLE} (seq, collection_id, dimensions, embedding) "  # noqa: S608 (constants and int() only)
        f"SELECT seq, collection_id, {dims}, CAST(CAST(:embedding AS real[]) AS vector) "
        "FROM retrieval_chunks WHERE id = :id")
    for start in range(0, len(rows), _BATCH):
        connection.execute(statement, rows[start:start + _BATCH])


def nearest_sql(dimensions: int) -> str:
    """The k-NN query over collections of one vector size; the ORDER BY matches the partial HNSW index."""
    dims = int(dimensions)
    return (f"SELECT seq, 1 - (embedding::vector({dims}) <=> q.v) AS cosine "  # noqa: S608 (constants and int() only)
            f"FROM {TABLE}, (SELECT CAST(CAST(:query AS real[]) AS vector({dims})) AS v) AS q "
            f"WHERE dimensions = {dims} AND collection_id IN :ids "
            f"ORDER BY embedding::vector({dims}) <=> q.v LIMIT :n")


def nearest(connection: Connection, collection_ids: Sequence[str], query: np.ndarray, n: int, *,
            iterative: bool = True, ef_search: int | None = None) -> list[tuple[int, float]]:
    """The n (seq, cosine) pairs closest to `query` in these collections, best first (approximate
    when the planner uses the HNSW index: ef_search scales with n, and pgvector >= 0.8 keeps
    scanning the graph until n rows pass the collection filter)."""
    dims = int(query.shape[-1])
    if ef_search is None:
        ef_search = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, 2 * n))
    connection.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
    if iterative:
        connection.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
    statement = text(nearest_sql(dims)).bindparams(bindparam("ids", expanding=True))
    rows = connection.execute(statement, {"query": np.asarray(query, dtype=np.float32).reshape(-1).tolist(),
                                          "ids": list(collection_ids), "n": int(n)}).all()
    return [(int(seq), float(cosine)) for seq, cosine in rows]
