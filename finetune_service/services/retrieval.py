"""Retrieval: folders of document collections, background indexing, hybrid search and grounded answers.

* A **folder** belongs to a tenant (another tenant's folder id is a 404). Uploading without a
  folder creates one. A **collection** is a named set of documents in a folder ("default"
  unless named), embedded with one model chosen when the collection is created.
* Adding a **document** (file upload, URL, web crawl) extracts its text during the request (so
  bad files and refused URLs are 4xx at once), then chunks, embeds and stores it in a
  background task held by this service; status moves pending -> indexing -> ready | failed.
* Chunks and their float32 vectors live in one table, so a delete removes both atomically; the
  full-text index (SQLite FTS5 via triggers / a PostgreSQL generated tsvector) follows in the
  same transaction. Searches read the vectors of a collection once into memory and reuse them
  while the collection's `revision` is unchanged (see `retrieval/search.py` for the scoring).
* On PostgreSQL with the pgvector extension, vectors are also kept in an HNSW-indexed side table
  (written in the indexing transaction, deleted with their chunk by a foreign key) and the vector
  half of a search is a k-NN query there instead of the in-memory scan (`retrieval/pgvector.py`).
* Answers retrieve context and call any chat model through the completions service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import msgspec
import numpy as np
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlmodel import col

from finetune_service.auth import Principal
from finetune_service.background import BackgroundTasks
from finetune_service.db.engine import Database
from finetune_service.db.tables import (
    RetrievalChunk,
    RetrievalCollection,
    RetrievalDocument,
    RetrievalFolder,
    utcnow,
)
from finetune_service.errors import (
    BadRequest,
    Conflict,
    DomainError,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from finetune_service.retrieval import pgvector
from finetune_service.retrieval.chunking import chunk_pages, count_tokens
from finetune_service.retrieval.embeddings import (
    LOCAL_MODELS,
    Embedder,
    EmbeddingUnavailable,
    ProviderEmbedder,
    default_embedding_model,
    local_embedder,
)
from finetune_service.retrieval.extract import (
    Extracted,
    ExtractionError,
    Page,
    UnsupportedFormat,
    detect_format,
    extract,
)
from finetune_service.retrieval.fetch import (
    Fetcher,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    FetchResult,
    FetchTooLarge,
    crawl_candidates,
)
from finetune_service.retrieval.robots import Robots, load_robots
from finetune_service.retrieval.search import (
    VectorBlock,
    VectorCache,
    coverage,
    fts5_match,
    fuse,
    query_terms,
    to_bytes,
    top_by_cosine,
    websearch_query,
)
from finetune_service.schemas.completions import ChatCompletionRequest, EmbeddingsRequest, StreamOptions
from finetune_service.schemas.retrieval import (
    AnswerRequest,
    ChunkMetadata,
    DocumentView,
    FileView,
    FolderDoc,
    FolderFiles,
    FolderView,
    Sentence,
    UploadResult,
)
from finetune_service.services.completions import CompletionsService

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "default"
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_TOP = 100
MAX_CRAWL_LINKS = 100
STALE_AFTER = timedelta(minutes=10)
# Full-text search leaves out words found in this share of the searched chunks (see _common_terms).
COMMON_SHARE = 0.02
COMMON_MIN = 1000
NO_CONTEXT_ANSWER = "I could not find anything relevant to your question in this folder, so I cannot answer it."
SYSTEM_PROMPT = ("Answer the user from the numbered context passages below. If they do not hold the answer, "
                 "say you do not know.")
_encoder = msgspec.json.Encoder()


@dataclass
class Hit:
    chunk: RetrievalChunk
    score: float
    file_name: str
    collection_name: str


def _metadata(chunk: RetrievalChunk, file_name: str, collection_name: str) -> ChunkMetadata:
    return ChunkMetadata(
        document_id=chunk.document_id, element_id=chunk.id, doc_id=chunk.document_id, file_name=file_name,
        page_label=chunk.page_label, source_url=chunk.source_url, collection_name=collection_name,
        chunk_index=chunk.ordinal, start_offset=chunk.start_offset, end_offset=chunk.end_offset,
    )


def hit_view(hit: Hit) -> Sentence:
    return Sentence(sentence=hit.chunk.text, score=round(hit.score, 6),
                    metadata=_metadata(hit.chunk, hit.file_name, hit.collection_name))


def source_format(name: str, media_type: str | None, *, from_url: bool) -> str:
    """The format of an upload (by extension, then media type) or of a fetched URL (by the server's
    media type, then the URL path's extension)."""
    if from_url:
        if media_type:
            with contextlib.suppress(UnsupportedFormat):
                return detect_format(None, media_type)
        tail = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return detect_format(tail if "." in tail else None, None if media_type is None else media_type)
    return detect_format(name, media_type)


def _collection_name(name: str | None) -> str:
    name = (name or DEFAULT_COLLECTION).strip()
    if not name or len(name) > 200:
        raise ValidationFailed("'collection_name' must be 1 to 200 characters.", param="collection_name")
    return name


@dataclass
class RetrievalService:
    database: Database
    completions: CompletionsService
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    max_file_bytes: int = MAX_FILE_BYTES
    cache: VectorCache = field(default_factory=VectorCache)
    _tasks: BackgroundTasks = field(default_factory=lambda: BackgroundTasks("retrieval-index"))
    _term_cache: dict[tuple[tuple[str, ...], str], bool] = field(default_factory=dict)
    _fetcher: Fetcher | None = None
    # pgvector (PostgreSQL only): None until detected; False keeps the exact in-memory search.
    use_pgvector: bool = True
    ann_searches: int = 0  # vector searches answered by pgvector (tests, benchmarks)
    _pgvector: bool | None = None
    _pgvector_iterative: bool = False
    _pgvector_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _pgvector_indexes: set[int] = field(default_factory=set)
    _chunk_counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.policy)
        return self._fetcher

    # -- folders and collections ----------------------------------------------------------
    @staticmethod
    async def _folder(session: AsyncSession, principal: Principal, folder_id: str) -> RetrievalFolder:
        folder = await session.get(RetrievalFolder, folder_id)
        if folder is None or folder.tenant_id != principal.tenant_id:
            raise NotFound(f"Folder {folder_id!r} does not exist.", param="folder_id")
        return folder

    async def _collections(self, session: AsyncSession, principal: Principal, folder_id: str,
                           name: str | None) -> list[RetrievalCollection]:
        await self._folder(session, principal, folder_id)
        query = select(RetrievalCollection).where(col(RetrievalCollection.folder_id) == folder_id)
        if name is not None:
            query = query.where(col(RetrievalCollection.name) == name)
        collections = list((await session.execute(query.order_by(col(RetrievalCollection.name)))).scalars())
        if name is not None and not collections:
            raise NotFound(f"Folder {folder_id!r} has no collection {name!r}.", param="collection_name")
        return collections

    async def _check_embedding_model(self, principal: Principal, model: str) -> None:
        if model in LOCAL_MODELS:
            return
        if model.startswith("local/"):
            raise ValidationFailed(f"Unknown local embedding model {model!r}; use one of {', '.join(LOCAL_MODELS)} "
                                   "or a provider model such as openai/text-embedding-3-small.",
                                   param="embedding_model")
        await self.completions.resolve(principal, model)

    async def _target(self, principal: Principal, folder_id: str | None, collection_name: str | None,
                      embedding_model: str | None) -> tuple[RetrievalFolder, RetrievalCollection]:
        """The folder (created when `folder_id` is None) and collection (created on first use)."""
        name = _collection_name(collection_name)
        if embedding_model is not None:
            await self._check_embedding_model(principal, embedding_model)
        for _attempt in range(3):
            try:
                async with self.database.session() as session:
                    if folder_id is None:
                        folder = RetrievalFolder(tenant_id=principal.tenant_id)
                        session.add(folder)
                        await session.flush()
                    else:
                        folder = await self._folder(session, principal, folder_id)
                    existing = (await session.execute(select(RetrievalCollection).where(
                        col(RetrievalCollection.folder_id) == folder.id, col(RetrievalCollection.name) == name,
                    ))).scalar_one_or_none()
                    if existing is not None:
                        if embedding_model is not None and embedding_model != existing.embedding_model:
                            raise Conflict(
                                f"Collection {name!r} already uses the embedding model {existing.embedding_model}; "
                                f"use another collection_name for {embedding_model}.", param="embedding_model")
                        return folder, existing
                    collection = RetrievalCollection(
                        tenant_id=principal.tenant_id, folder_id=folder.id, name=name,
                        embedding_model=embedding_model or default_embedding_model(),
                    )
                    session.add(collection)
                    await session.flush()
                    return folder, collection
            except IntegrityError:
                continue  # another request created the same collection: read it
        raise Conflict("The collection is being created by another request; retry.", param="collection_name")

    # -- adding documents -----------------------------------------------------------------
    async def _extract(self, data: bytes, file_name: str, media_type: str | None, *, url: str | None = None,
                       charset: str | None = None) -> Extracted:
        try:
            fmt = source_format(file_name, media_type, from_url=url is not None)
        except UnsupportedFormat as error:
            raise UnsupportedMediaType(str(error), param="url" if url else "file") from None
        try:
            extracted = await asyncio.to_thread(extract, data, fmt, charset=charset, url=url)
        except ExtractionError as error:
            raise ValidationFailed(f"Cannot read {file_name}: {error}", param="file") from None
        if not extracted.text.strip():
            raise ValidationFailed(f"{file_name} has no text to index (a scanned PDF needs OCR first).", param="file")
        return extracted

    async def _create_document(
        self, principal: Principal, folder_id: str | None, collection_name: str | None, embedding_model: str | None,
        *, kind: str, file_name: str, source_url: str | None, content_type: str, size: int,
        pages: list[dict[str, Any]] | None = None,
    ) -> tuple[RetrievalFolder, RetrievalCollection, RetrievalDocument]:
        folder, collection = await self._target(principal, folder_id, collection_name, embedding_model)
        document = RetrievalDocument(
            tenant_id=principal.tenant_id, folder_id=folder.id, collection_id=collection.id, kind=kind,
            file_name=file_name[:500], source_url=source_url, content_type=content_type, bytes=size,
            pages=pages or [],
        )
        async with self.database.session() as session:
            session.add(document)
        return folder, collection, document

    async def add_file(
        self, principal: Principal, file_name: str, data: bytes, media_type: str | None = None, *,
        folder_id: str | None = None, collection_name: str | None = None, embedding_model: str | None = None,
    ) -> UploadResult:
        file_name = (file_name or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        if len(data) > self.max_file_bytes:
            raise PayloadTooLarge(f"{file_name} is {len(data)} bytes; files up to {self.max_file_bytes} bytes "
                                  "can be indexed.", param="file")
        extracted = await self._extract(data, file_name, media_type)
        folder, collection, document = await self._create_document(
            principal, folder_id, collection_name, embedding_model, kind="file", file_name=file_name,
            source_url=None, content_type=extracted.format, size=len(data),
        )
        self._tasks.spawn(document.id, self._index(document.id, extracted.pages))
        return self._result(folder, collection, document)

    async def fetch_url(self, url: str) -> FetchResult:
        """A server-side fetch under the private-address block; refusals become 4xx."""
        return await self._fetch(url)

    async def _fetch(self, url: str) -> FetchResult:
        try:
            return await self.fetcher.fetch(url)
        except FetchRefused as error:
            raise ValidationFailed(str(error), param="url") from None
        except FetchTooLarge as error:
            raise PayloadTooLarge(str(error), param="url") from None
        except FetchFailed as error:
            raise BadRequest(str(error), param="url") from None

    @staticmethod
    def _name_of(url: str) -> str:
        tail = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return tail if tail and "." in tail else url

    async def add_url(
        self, principal: Principal, url: str, *, folder_id: str | None = None, collection_name: str | None = None,
        embedding_model: str | None = None,
    ) -> UploadResult:
        fetched = await self._fetch(url)
        name = self._name_of(fetched.url)
        extracted = await self._extract(fetched.body, name, fetched.content_type, url=fetched.url,
                                        charset=fetched.charset)
        folder, collection, document = await self._create_document(
            principal, folder_id, collection_name, embedding_model, kind="url", file_name=name,
            source_url=fetched.url, content_type=extracted.format, size=len(fetched.body),
        )
        self._tasks.spawn(document.id, self._index(document.id, extracted.pages))
        return self._result(folder, collection, document)

    async def add_web_pages(
        self, principal: Principal, url: str, *, deep_level: int = 1, max_links: int = 10,
        folder_id: str | None = None, collection_name: str | None = None, embedding_model: str | None = None,
    ) -> UploadResult:
        """Index a page and, for deep_level 2 and 3, the same-host pages it links to (level 2) and
        the pages those link to (level 3); at most `max_links` pages besides the first."""
        if not 1 <= deep_level <= 3:
            raise ValidationFailed(f"'deep_level' must be 1, 2 or 3, got {deep_level}.", param="deep_level")
        if not 0 <= max_links <= MAX_CRAWL_LINKS:
            raise ValidationFailed(f"'max_links' must be between 0 and {MAX_CRAWL_LINKS}, got {max_links}.",
                                   param="max_links")
        fetched = await self._fetch(url)
        extracted = await self._extract(fetched.body, self._name_of(fetched.url), fetched.content_type,
                                        url=fetched.url, charset=fetched.charset)
        folder, collection, document = await self._create_document(
            principal, folder_id, collection_name, embedding_model, kind="crawl", file_name=fetched.url,
            source_url=fetched.url, content_type=extracted.format, size=len(fetched.body),
            pages=[{"url": fetched.url, "level": 1, "status": "fetched"}],
        )
        self._tasks.spawn(document.id, self._crawl(document.id, fetched.url, extracted, deep_level, max_links))
        return self._result(folder, collection, document)

    async def _crawl(self, document_id: str, start: str, first: Extracted, deep_level: int, max_links: int) -> None:
        pages: list[Page] = list(first.pages)
        report: list[dict[str, Any]] = [{"url": start, "level": 1, "status": "fetched"}]
        seen = {start}
        frontier = crawl_candidates(first.links, start, seen) if first.format == "html" else []
        fetched_links = 0
        try:
            await self._set_status(document_id, "indexing", pages=report)
            robots = await load_robots(self.fetcher, start) if frontier and deep_level > 1 else None
            for level in range(2, deep_level + 1):
                next_frontier: list[str] = []
                for link in frontier:
                    if fetched_links >= max_links:
                        break
                    if link in seen:
                        continue
                    seen.add(link)
                    fetched_links += 1  # a link the site's robots.txt refuses counts too: the report stays bounded
                    entry, extracted = await self._visit(link, level, robots)
                    if extracted is not None:
                        pages.extend(p for p in extracted.pages if p.text.strip())
                        if extracted.format == "html":
                            next_frontier.extend(crawl_candidates(extracted.links, start, seen))
                    report.append(entry)
                    await self._set_status(document_id, "indexing", pages=report)
                frontier = next_frontier
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("crawl of %s failed", start)
            await self._set_status(document_id, "failed", error=f"Crawl failed: {error}")
            return
        await self._index(document_id, pages)

    async def _visit(self, link: str, level: int, robots: Robots | None) -> tuple[dict[str, Any], Extracted | None]:
        """One linked page of a crawl: its report entry, and what it holds when it could be read."""
        entry: dict[str, Any] = {"url": link, "level": level}
        refusal = robots.refusal(link) if robots is not None else None
        if refusal is not None:
            return {**entry, "status": "skipped", "error": refusal}, None
        try:
            result = await self.fetcher.fetch(link)
            fmt = source_format(self._name_of(result.url), result.content_type, from_url=True)
            extracted = await asyncio.to_thread(extract, result.body, fmt, charset=result.charset, url=result.url)
        except (FetchFailed, FetchRefused, ExtractionError, UnsupportedFormat) as error:
            return {**entry, "status": "skipped", "error": str(error)}, None
        return {**entry, "status": "fetched"}, extracted

    # -- indexing ---------------------------------------------------------------------------
    async def _set_status(self, document_id: str, status: str, *, error: str | None = None,
                          pages: list[dict[str, Any]] | None = None) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": utcnow()}
        if pages is not None:
            values["pages"] = list(pages)
        with contextlib.suppress(Exception):
            async with self.database.session() as session:
                await session.execute(update(RetrievalDocument).where(col(RetrievalDocument.id) == document_id)
                                      .values(**values))

    async def pgvector_enabled(self) -> bool:
        """Whether vectors go to (and searches read) the pgvector side table: PostgreSQL with the
        extension available. Detected once; enables the extension if migration 0007 ran before it
        was installed."""
        if not self.use_pgvector or self.database.is_sqlite:
            return False
        if self._pgvector is None:
            async with self._pgvector_lock:
                if self._pgvector is None:
                    async with self.database.engine.begin() as conn:
                        enabled = await conn.run_sync(pgvector.install)
                        if enabled:
                            self._pgvector_iterative = await conn.run_sync(pgvector.extension_version) >= (0, 8)
                    self._pgvector = enabled
                    log.info("retrieval vector search: %s", "pgvector HNSW" if enabled else "exact (in memory)")
        return self._pgvector

    async def _ensure_ann_index(self, dimensions: int) -> None:
        if dimensions not in self._pgvector_indexes:
            async with self.database.engine.begin() as conn:
                await conn.run_sync(pgvector.ensure_index, dimensions)
            self._pgvector_indexes.add(dimensions)

    def embedder(self, principal: Principal, model: str) -> Embedder:
        local = local_embedder(model)
        if local is not None:
            return local

        async def call(name: str, texts: list[str]) -> dict[str, Any]:
            return await self.completions.embeddings(principal, EmbeddingsRequest(model=name, input=texts))

        return ProviderEmbedder(model, call)

    async def _index(self, document_id: str, pages: list[Page]) -> None:
        try:
            async with self.database.session() as session:
                document = await session.get(RetrievalDocument, document_id)
                if document is None:
                    return
                collection = await session.get(RetrievalCollection, document.collection_id)
                assert collection is not None
            await self._set_status(document_id, "indexing")
            specs = await asyncio.to_thread(chunk_pages, pages)
            embedder = self.embedder(Principal(tenant_id=document.tenant_id), collection.embedding_model)
            vectors = await embedder.embed([s.text for s in specs]) if specs else np.zeros((0, 1), np.float32)
            tokens = sum(count_tokens(p.text) for p in pages)
            ann = bool(specs) and pgvector.indexable(int(vectors.shape[1])) and await self.pgvector_enabled()
            if ann:
                await self._ensure_ann_index(int(vectors.shape[1]))
            async with self.database.session() as session:
                current = await session.get(RetrievalCollection, collection.id)
                if current is None or await session.get(RetrievalDocument, document_id) is None:
                    return  # deleted while indexing
                dimensions = int(vectors.shape[1]) if specs else current.dimensions
                if specs and current.dimensions not in (None, dimensions):
                    raise EmbeddingUnavailable(
                        f"{collection.embedding_model} returned {dimensions} dimensions; the collection holds "
                        f"{current.dimensions}-dimension vectors.")
                rows = [{
                    "id": f"el_{secrets.token_hex(12)}", "tenant_id": document.tenant_id,
                    "folder_id": document.folder_id, "collection_id": document.collection_id,
                    "document_id": document_id, "ordinal": i,
                    "text": spec.text, "page_label": spec.page_label, "source_url": spec.source_url,
                    "start_offset": spec.start, "end_offset": spec.end, "embedding": to_bytes(vectors[i]),
                } for i, spec in enumerate(specs)]
                for start in range(0, len(rows), 5000):
                    await session.execute(insert(RetrievalChunk), rows[start:start + 5000])
                if ann:
                    ids = [str(row["id"]) for row in rows]
                    await session.run_sync(lambda s: pgvector.add_vectors(s.connection(), ids, vectors))
                await session.execute(update(RetrievalCollection).where(col(RetrievalCollection.id) == collection.id)
                                      .values(revision=RetrievalCollection.revision + 1, dimensions=dimensions))
                await session.execute(update(RetrievalDocument).where(col(RetrievalDocument.id) == document_id).values(
                    status="ready", error=None, tokens=tokens, chunk_count=len(rows), updated_at=utcnow()))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            detail = error.detail if isinstance(error, DomainError) else f"{type(error).__name__}: {error}"
            if not isinstance(error, DomainError | EmbeddingUnavailable):
                log.exception("indexing document %s failed", document_id)
            await self._set_status(document_id, "failed", error=f"Indexing failed: {detail}")

    async def wait_indexed(self) -> None:
        """Wait until every background indexing task has finished (tests, benchmarks)."""
        await self._tasks.wait_all()

    async def close(self) -> None:
        await self._tasks.close()
        if self._fetcher is not None:
            await self._fetcher.aclose()

    # -- views ------------------------------------------------------------------------------
    def _document_view(self, document: RetrievalDocument, collection: RetrievalCollection) -> DocumentView:
        status, error = document.status, document.error
        if status in ("pending", "indexing") and document.id not in self._tasks \
                and utcnow() - document.updated_at > STALE_AFTER:
            status, error = "failed", "Indexing was interrupted (the service restarted); upload the document again."
        return DocumentView(
            id=document.id, folder_id=document.folder_id, collection_name=collection.name,
            embedding_model=collection.embedding_model, kind=document.kind, file_name=document.file_name,
            source_url=document.source_url, content_type=document.content_type, bytes=document.bytes, status=status,
            error=error, tokens=document.tokens, chunks=document.chunk_count, pages=list(document.pages),
            created_at=document.created_at, updated_at=document.updated_at,
        )

    def _result(self, folder: RetrievalFolder, collection: RetrievalCollection,
                document: RetrievalDocument) -> UploadResult:
        ready = document.status == "ready"
        return UploadResult(
            folder=FolderView(api_folder_id=folder.id, created_at=folder.created_at),
            file=FileView(url=document.source_url, tokens=document.tokens if ready else None,
                          document_id=document.id if ready else None, created_at=document.created_at),
            document=self._document_view(document, collection), file_id=document.id,
        )

    async def document(self, principal: Principal, folder_id: str, document_id: str) -> DocumentView:
        async with self.database.session() as session:
            await self._folder(session, principal, folder_id)
            document = await session.get(RetrievalDocument, document_id)
            if document is None or document.folder_id != folder_id or document.tenant_id != principal.tenant_id:
                raise NotFound(f"Folder {folder_id!r} has no document {document_id!r}.", param="document_id")
            collection = await session.get(RetrievalCollection, document.collection_id)
            assert collection is not None
        return self._document_view(document, collection)

    async def folder_files(self, principal: Principal, folder_id: str, collection_name: str | None = None, *,
                           limit: int = 1000, offset: int = 0) -> FolderFiles:
        async with self.database.session() as session:
            collections = await self._collections(session, principal, folder_id, collection_name)
            names = {c.id: c.name for c in collections}
            if not names:
                return FolderFiles(docs=[], count=0)
            where = col(RetrievalChunk.collection_id).in_(list(names))
            count = int((await session.execute(select(func.count()).select_from(RetrievalChunk).where(where)))
                        .scalar_one())
            rows = (await session.execute(
                select(RetrievalChunk, col(RetrievalDocument.file_name))
                .join(RetrievalDocument, col(RetrievalDocument.id) == col(RetrievalChunk.document_id))
                .where(where).order_by(col(RetrievalDocument.created_at), col(RetrievalChunk.document_id),
                                       col(RetrievalChunk.ordinal))
                .limit(limit).offset(offset))).all()
        docs = [FolderDoc(sentence=chunk.text, metadata=_metadata(chunk, file_name, names[chunk.collection_id]))
                for chunk, file_name in rows]
        return FolderFiles(docs=docs, count=count)

    # -- deletes ----------------------------------------------------------------------------
    async def delete_collection(self, principal: Principal, folder_id: str, collection_name: str) -> int:
        async with self.database.session() as session:
            collection = (await self._collections(session, principal, folder_id, collection_name))[0]
            documents = list((await session.execute(select(col(RetrievalDocument.id)).where(
                col(RetrievalDocument.collection_id) == collection.id))).scalars())
            result = await session.execute(delete(RetrievalChunk).where(
                col(RetrievalChunk.collection_id) == collection.id))
            deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
            await session.execute(delete(RetrievalDocument).where(
                col(RetrievalDocument.collection_id) == collection.id))
            await session.execute(delete(RetrievalCollection).where(col(RetrievalCollection.id) == collection.id))
        self.cache.drop(collection.id)
        for document_id in documents:
            self._tasks.cancel(document_id)
        return deleted

    async def delete_element(self, principal: Principal, folder_id: str, collection_name: str,
                             element_id: str) -> None:
        async with self.database.session() as session:
            collection = (await self._collections(session, principal, folder_id, collection_name))[0]
            chunk = (await session.execute(select(RetrievalChunk).where(
                col(RetrievalChunk.id) == element_id, col(RetrievalChunk.collection_id) == collection.id,
            ))).scalar_one_or_none()
            if chunk is None:
                raise NotFound(f"Collection {collection_name!r} has no element {element_id!r}.", param="element_id")
            await session.execute(delete(RetrievalChunk).where(col(RetrievalChunk.seq) == chunk.seq))
            await session.execute(update(RetrievalCollection).where(col(RetrievalCollection.id) == collection.id)
                                  .values(revision=RetrievalCollection.revision + 1))
            await session.execute(update(RetrievalDocument).where(col(RetrievalDocument.id) == chunk.document_id)
                                  .values(chunk_count=RetrievalDocument.chunk_count - 1, updated_at=utcnow()))

    # -- search -----------------------------------------------------------------------------
    async def _vectors(self, session: AsyncSession, collection: RetrievalCollection) -> VectorBlock:
        block = self.cache.get(collection.id, collection.revision)
        if block is not None:
            return block
        rows = (await session.execute(select(col(RetrievalChunk.seq), col(RetrievalChunk.embedding)).where(
            col(RetrievalChunk.collection_id) == collection.id).order_by(col(RetrievalChunk.seq)))).all()
        dimensions = collection.dimensions or 1
        seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32).reshape(-1, dimensions) \
            if rows else np.zeros((0, dimensions), np.float32)
        block = VectorBlock(collection.revision, seqs, matrix)
        self.cache.put(collection.id, block)
        return block

    async def _chunk_count(self, session: AsyncSession, collection: RetrievalCollection) -> int:
        cached = self._chunk_counts.get(collection.id)
        if cached is not None and cached[0] == collection.revision:
            return cached[1]
        count = int((await session.execute(select(func.count()).select_from(RetrievalChunk).where(
            col(RetrievalChunk.collection_id) == collection.id))).scalar_one())
        if len(self._chunk_counts) > 10_000:
            self._chunk_counts.clear()
        self._chunk_counts[collection.id] = (collection.revision, count)
        return count

    async def _nearest(self, session: AsyncSession, group: list[RetrievalCollection], query: np.ndarray,
                       n: int) -> list[tuple[int, float]]:
        """The vector candidates of collections that share one model: pgvector's HNSW index when
        enabled, else the exact scan of the in-memory vectors."""
        if pgvector.indexable(int(query.shape[-1])) and await self.pgvector_enabled():
            ids = [c.id for c in group]
            self.ann_searches += 1
            iterative = self._pgvector_iterative
            return await session.run_sync(
                lambda s: pgvector.nearest(s.connection(), ids, query, n, iterative=iterative))
        return top_by_cosine(query, [await self._vectors(session, c) for c in group], n)

    async def _common_terms(self, session: AsyncSession, collections: list[RetrievalCollection],
                            terms: list[str], total: int) -> set[str]:
        """Terms in at least COMMON_SHARE of the searched chunks (and at least COMMON_MIN of them).

        Ranking every chunk that holds a very common word costs time in proportion to the
        collection and adds little (such words carry almost no bm25 weight), so the full-text side
        leaves them out; the vector side and the score's term coverage still use them. Counts stop
        at the cut-off and are cached per collection revision."""
        cap = max(COMMON_MIN, int(total * COMMON_SHARE))
        if total < cap:
            return set()
        key = tuple(sorted(f"{c.id}@{c.revision}" for c in collections))
        common: set[str] = set()
        for term in terms:
            cached = self._term_cache.get((key, term))
            if cached is None:
                if self.database.is_sqlite:
                    query = text("SELECT count(*) FROM (SELECT 1 FROM retrieval_chunks_fts "
                                 "WHERE retrieval_chunks_fts MATCH :q LIMIT :cap)")
                    params: dict[str, Any] = {"q": fts5_match([term]), "cap": cap}
                else:
                    # Counted over the whole table (as FTS5 does): the GIN index answers it alone.
                    query = text("SELECT count(*) FROM (SELECT 1 FROM retrieval_chunks "
                                 "WHERE search_vector @@ websearch_to_tsquery('english', :q) LIMIT :cap) AS hits")
                    params = {"q": term, "cap": cap}
                cached = int((await session.execute(query, params)).scalar_one()) >= cap
                if len(self._term_cache) > 100_000:
                    self._term_cache.clear()
                self._term_cache[(key, term)] = cached
            if cached:
                common.add(term)
        return common

    async def _text_matches(self, session: AsyncSession, collection_ids: list[str], terms: list[str],
                            n: int) -> list[int]:
        if not terms:
            return []
        if self.database.is_sqlite:
            query = text(
                "SELECT f.rowid FROM retrieval_chunks_fts AS f JOIN retrieval_chunks AS c ON c.seq = f.rowid "
                "WHERE retrieval_chunks_fts MATCH :q AND c.collection_id IN :ids ORDER BY f.rank LIMIT :n"
            ).bindparams(bindparam("ids", expanding=True))
            params: dict[str, Any] = {"q": fts5_match(terms), "ids": collection_ids, "n": n}
        else:
            # MATERIALIZED: match through the GIN index first, then filter by collection (every chunk
            # of a large collection matches the collection filter, which would otherwise win the plan).
            query = text(
                "WITH matched AS MATERIALIZED (SELECT seq, collection_id, ts_rank_cd(search_vector, query) AS score "
                "FROM retrieval_chunks, websearch_to_tsquery('english', :q) AS query WHERE search_vector @@ query) "
                "SELECT seq FROM matched WHERE collection_id IN :ids ORDER BY score DESC, seq LIMIT :n"
            ).bindparams(bindparam("ids", expanding=True))
            params = {"q": websearch_query(terms), "ids": collection_ids, "n": n}
        return [int(r[0]) for r in (await session.execute(query, params)).all()]

    async def search(self, principal: Principal, folder_id: str, query: str, *, top: int = 10,
                     collection_name: str | None = None, threshold: float = 0.4) -> list[Hit]:
        if not query.strip():
            raise ValidationFailed("'query' must not be empty.", param="query")
        if not 1 <= top <= MAX_TOP:
            raise ValidationFailed(f"'top' must be between 1 and {MAX_TOP}, got {top}.", param="top")
        if not 0.0 <= threshold <= 1.0:
            raise ValidationFailed(f"'similarity_threshold' must be between 0 and 1, got {threshold}.",
                                   param="similarity_threshold")
        n = max(top * 5, 50)
        terms = query_terms(query)
        async with self.database.session() as session:
            collections = [c for c in await self._collections(session, principal, folder_id, collection_name)
                           if c.dimensions is not None]
            if not collections:
                return []
            by_model: dict[tuple[str, int | None], list[RetrievalCollection]] = {}
            for collection in collections:
                by_model.setdefault((collection.embedding_model, collection.dimensions), []).append(collection)
            vector_hits: list[tuple[int, float]] = []
            for (model, _dimensions), group in by_model.items():
                try:
                    embedded = await self.embedder(principal, model).embed([query])
                except EmbeddingUnavailable as error:
                    raise BadRequest(str(error), param="embedding_model") from None
                vector_hits.extend(await self._nearest(session, group, embedded[0], n))
            vector_hits.sort(key=lambda p: -p[1])
            vector_hits = vector_hits[:n]
            total = sum([await self._chunk_count(session, c) for c in collections])
            common = await self._common_terms(session, collections, terms, total)
            text_hits = await self._text_matches(session, [c.id for c in collections],
                                                 [t for t in terms if t not in common], n)
            wanted = {seq for seq, _ in vector_hits} | set(text_hits)
            if not wanted:
                return []
            rows = (await session.execute(
                select(RetrievalChunk, col(RetrievalDocument.file_name))
                .join(RetrievalDocument, col(RetrievalDocument.id) == col(RetrievalChunk.document_id))
                .where(col(RetrievalChunk.seq).in_(wanted)).options(defer(cast(Any, RetrievalChunk.embedding))))).all()
        chunks = {chunk.seq: (chunk, file_name) for chunk, file_name in rows}
        names = {c.id: c.name for c in collections}
        covered = {seq: coverage(terms, chunks[seq][0].text) for seq in text_hits if seq in chunks}
        hits: list[Hit] = []
        for seq, score in fuse([h for h in vector_hits if h[0] in chunks], [s for s in text_hits if s in chunks],
                               covered):
            if score < threshold or len(hits) >= top:
                break
            chunk, file_name = chunks[seq]
            hits.append(Hit(chunk, score, file_name, names[chunk.collection_id]))
        return hits

    # -- answers ----------------------------------------------------------------------------
    @staticmethod
    def _question(request: AnswerRequest) -> str:
        if request.query and request.query.strip():
            return request.query
        for message in reversed(request.conversation):
            if message.role == "user" and message.content.strip():
                return message.content
        raise ValidationFailed("Send a 'query', or a 'conversation' whose last user message is the question.",
                               param="query")

    def _messages(self, request: AnswerRequest, question: str, hits: Sequence[Hit]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if hits:
            passages = [f"[{i}] {h.chunk.text}" for i, h in enumerate(hits, start=1)]
            messages.append({"role": "system", "content": SYSTEM_PROMPT + "\n\n" + "\n\n".join(passages)})
        history = [{"role": m.role, "content": m.content} for m in request.conversation]
        if request.query and request.query.strip():
            history.append({"role": "user", "content": question})
        return messages + history

    async def _retrieve(self, principal: Principal, request: AnswerRequest) -> tuple[str, list[Hit]]:
        folder_id = request.folder_id or request.api_folder_id
        if not folder_id:
            raise ValidationFailed("'folder_id' is required.", param="folder_id")
        question = self._question(request)
        hits = await self.search(principal, folder_id, question, top=request.top,
                                 collection_name=request.collection_name, threshold=request.similarity_threshold)
        return question, hits

    def _chat_request(self, request: AnswerRequest, messages: list[dict[str, Any]], stream: bool
                      ) -> ChatCompletionRequest:
        # A streamed answer asks for usage too, so clients see the tokens the answer cost.
        return ChatCompletionRequest(model=request.model, messages=messages, max_tokens=request.max_new_tokens,
                                     temperature=request.temperature, stream=stream or None,
                                     stream_options=StreamOptions(include_usage=True) if stream else None)

    @staticmethod
    def _no_context(model: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": NO_CONTEXT_ANSWER}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    async def answer(self, principal: Principal, request: AnswerRequest) -> dict[str, Any]:
        question, hits = await self._retrieve(principal, request)
        sources = [msgspec.to_builtins(hit_view(h)) for h in hits]
        if not hits and request.only_with_context:
            return {**self._no_context(request.model), "sources": [], "context_found": False}
        result = await self.completions.complete(
            principal, self._chat_request(request, self._messages(request, question, hits), False))
        return {**result, "sources": sources, "context_found": bool(hits)}

    async def answer_stream(self, principal: Principal, request: AnswerRequest
                            ) -> tuple[AsyncIterator[bytes], Any]:
        """SSE bytes (the model's chunks, then `{"object": "retrieval.sources", ...}`, then [DONE])
        and a closer; every error before the first byte raises here."""
        question, hits = await self._retrieve(principal, request)
        sources = [msgspec.to_builtins(hit_view(h)) for h in hits]
        tail = b"data: " + _encoder.encode({"object": "retrieval.sources", "sources": sources,
                                            "context_found": bool(hits)}) + b"\n\n"
        if not hits and request.only_with_context:
            completion = self._no_context(request.model)

            async def fixed() -> AsyncIterator[bytes]:
                base = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
                yield b"data: " + _encoder.encode({**base, "choices": [{"index": 0, "delta": {
                    "role": "assistant", "content": NO_CONTEXT_ANSWER}, "finish_reason": None}]}) + b"\n\n"
                yield b"data: " + _encoder.encode({**base, "choices": [{"index": 0, "delta": {},
                                                                        "finish_reason": "stop"}]}) + b"\n\n"
                yield tail
                yield b"data: [DONE]\n\n"

            async def nothing() -> None:
                return None

            return fixed(), nothing
        stream = await self.completions.open_stream(
            principal, self._chat_request(request, self._messages(request, question, hits), True))

        async def relay() -> AsyncIterator[bytes]:
            async for event in stream.events():
                if event == b"data: [DONE]\n\n":
                    yield tail
                yield event

        return relay(), stream.aclose
