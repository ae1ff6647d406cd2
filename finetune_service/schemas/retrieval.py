"""Request and response bodies of `/api/retrieval` (folders, collections, search, answers).

Response keys follow the seed client's folder shapes (`apiFolderId`, `documentId`, ...) so
the RobinApi adapter can pass them through; request keys are snake_case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class UrlUpload(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    folder_id: str | None = None
    collection_name: str | None = None
    embedding_model: str | None = None


class WebPagesRequest(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    deep_level: int = 1
    max_links: int = 10
    folder_id: str | None = None
    collection_name: str | None = None
    embedding_model: str | None = None


class SimilarRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    api_folder_id: str | None = None
    folder_id: str | None = None  # accepted as a synonym of api_folder_id
    top: int = 10
    collection_name: str | None = None
    similarity_threshold: float = 0.4


class Message(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str


class AnswerRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Retrieve context from a folder, then answer with `model`. The question is `query`, or else
    the last user message of `conversation`."""

    folder_id: str | None = None
    api_folder_id: str | None = None
    query: str | None = None
    conversation: list[Message] = msgspec.field(default_factory=list)
    collection_name: str | None = None
    model: str = "sandbox/sandbox-chat-large"
    max_new_tokens: int = 512
    temperature: float | None = None
    top: int = 5
    similarity_threshold: float = 0.4
    only_with_context: bool = False
    stream: bool = False


class FolderView(msgspec.Struct):
    api_folder_id: str = msgspec.field(name="apiFolderId")
    created_at: datetime = msgspec.field(name="createdAt")


class FileView(msgspec.Struct):
    url: str | None
    tokens: int | None
    document_id: str | None = msgspec.field(name="documentId")
    created_at: datetime = msgspec.field(name="createdAt")


class DocumentView(msgspec.Struct):
    id: str
    folder_id: str = msgspec.field(name="folderId")
    collection_name: str = msgspec.field(name="collectionName")
    embedding_model: str = msgspec.field(name="embeddingModel")
    kind: str
    file_name: str = msgspec.field(name="fileName")
    source_url: str | None = msgspec.field(name="sourceUrl")
    content_type: str = msgspec.field(name="contentType")
    bytes: int
    status: str  # pending, indexing, ready, failed
    error: str | None
    tokens: int | None
    chunks: int
    pages: list[dict[str, Any]]
    created_at: datetime = msgspec.field(name="createdAt")
    updated_at: datetime = msgspec.field(name="updatedAt")


class UploadResult(msgspec.Struct):
    """The seed client's `folders` answer plus `document` (id and indexing status)."""

    folder: FolderView
    file: FileView
    document: DocumentView
    file_id: str


class ChunkMetadata(msgspec.Struct):
    document_id: str
    element_id: str
    doc_id: str
    file_name: str
    page_label: str | None
    source_url: str | None
    collection_name: str
    chunk_index: int
    start_offset: int
    end_offset: int


class Sentence(msgspec.Struct):
    sentence: str
    score: float
    metadata: ChunkMetadata


class SimilarResponse(msgspec.Struct):
    sentences: list[Sentence]


class FolderDoc(msgspec.Struct):
    sentence: str
    metadata: ChunkMetadata


class FolderFiles(msgspec.Struct):
    docs: list[FolderDoc]
    count: int


class Deleted(msgspec.Struct):
    message: str
    deleted: int
