"""Retrieval benchmark: index N chunks through the service's own indexing path (chunking, the
default static embedding model, batched inserts with the full-text index), then time top-10
hybrid searches (full-text + exact vector scan, fused) on SQLite and PostgreSQL.

    python benchmarks/bench_retrieval.py [--chunks 100000] [--queries 300] [--backends sqlite,postgresql]

PostgreSQL: a throwaway database on FINETUNE_BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), created and dropped by this script.
Text is synthetic (Zipf-distributed pseudo-words), so full-text matches behave like a real
vocabulary: common words match many chunks, rare ones few.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import select
from sqlmodel import col

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune_service.auth import Principal
from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.db.tables import RetrievalDocument
from finetune_service.retrieval.embeddings import load_static_model
from finetune_service.retrieval.extract import Page
from finetune_service.services.retrieval import RetrievalService

ADMIN_URL = os.environ.get("FINETUNE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PER_DOCUMENT = 1000
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "ba", "de", "fi", "go", "hu", "ja", "pe", "qui",
             "ro", "su", "ta", "un", "ex", "or", "al", "in", "on", "ar", "el", "is", "us"]


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5)))))
    return sorted(words)


def zipf_words(words: list[str], count: int, rng: np.random.Generator) -> list[str]:
    ranks = np.minimum(rng.zipf(1.2, size=count), len(words)) - 1
    return [words[r] for r in ranks]


def paragraph(words: list[str], rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(6):
        sentences.append(" ".join(zipf_words(words, int(rng.integers(8, 16)), rng)).capitalize() + ".")
    return " ".join(sentences)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def bench(url: str, label: str, chunks: int, queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    words = vocabulary(20000, rng)
    database = Database(url)
    await upgrade(database)
    service = RetrievalService(database, cast(Any, None))
    principal = Principal(tenant_id="bench")
    folder, collection = await service._target(principal, None, "bench", None)
    documents = max(1, chunks // PER_DOCUMENT)
    texts = [[paragraph(words, rng) for _ in range(PER_DOCUMENT)] for _ in range(documents)]
    started = time.perf_counter()
    for d, paragraphs in enumerate(texts):
        document = RetrievalDocument(tenant_id="bench", folder_id=folder.id, collection_id=collection.id,
                                     kind="file", file_name=f"doc{d}.txt", content_type="text", bytes=0)
        async with database.session() as session:
            session.add(document)
        await service._index(document.id, [Page("\n\n".join(paragraphs))])
    elapsed = time.perf_counter() - started
    async with database.session() as session:
        stored = sum((await session.execute(select(col(RetrievalDocument.chunk_count)).where(
            col(RetrievalDocument.folder_id) == folder.id))).scalars())
        failed = list((await session.execute(select(col(RetrievalDocument.error)).where(
            col(RetrievalDocument.status) == "failed"))).scalars())
    assert not failed, failed[:1]
    query_texts = [" ".join(zipf_words(words, int(rng.integers(2, 6)), rng)) for _ in range(queries)]
    cold_started = time.perf_counter()
    await service.search(principal, folder.id, query_texts[0], top=10, threshold=0.0)
    cold = (time.perf_counter() - cold_started) * 1000
    latencies = []
    results = []
    for query in query_texts:
        t0 = time.perf_counter()
        hits = await service.search(principal, folder.id, query, top=10, threshold=0.0)
        latencies.append((time.perf_counter() - t0) * 1000)
        results.append(len(hits))
    await service.close()
    await database.dispose()
    return {
        "backend": label, "chunks": stored, "index_seconds": elapsed, "chunks_per_second": stored / elapsed,
        "cold_query_ms": cold, "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies), "queries": len(latencies), "mean_results": statistics.fmean(results),
    }


async def with_postgres(chunks: int, queries: int) -> dict[str, Any]:
    import asyncpg

    name = f"bench_retrieval_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        return await bench(f"{base}/{name}", "postgresql", chunks, queries)
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    t0 = time.perf_counter()
    await asyncio.to_thread(load_static_model)
    print(f"embedding model loaded in {time.perf_counter() - t0:.1f} s")
    rows = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(await bench(f"sqlite+aiosqlite:///{tmp}/bench.db", "sqlite", args.chunks, args.queries))
        elif backend == "postgresql":
            rows.append(await with_postgres(args.chunks, args.queries))
        row = rows[-1]
        print(f"{row['backend']:>10}: {row['chunks']} chunks indexed in {row['index_seconds']:.1f} s "
              f"({row['chunks_per_second']:.0f} chunks/s, chunk+embed+insert); top-10 hybrid search over "
              f"{row['queries']} queries: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
              f"mean {row['mean_ms']:.1f} ms (first query, loading vectors: {row['cold_query_ms']:.0f} ms; "
              f"{row['mean_results']:.1f} results per query)", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
