"""Wire shapes of the RobinApi client (`robin-api` 2.24; see shared/specs/ROBIN.md).

Request keys are the client's own (camelCase where it sends camelCase). Response Structs keep
every key the client's pydantic models declare, null where there is no value, since an
`Optional[X]` field without a default must still be present. Unknown request keys are ignored:
the client is the contract, and it may add keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

# ---------------------------------------------------------------------------------- completions


class GetResponseBody(msgspec.Struct):
    """`get-response`: a chat completion; with `folder_id`, an answer grounded in that folder."""

    model: str
    conversation: list[dict[str, Any]] | str
    max_new_tokens: int | None = None
    stream: bool | None = False
    temperature: float | None = None
    save_response: bool | None = None
    tools: list[dict[str, Any]] | None = None
    folder_id: str | None = None
    top: int | None = None
    similarity_threshold: float | None = None
    only_with_context: bool | None = None
    collection_name: str | None = msgspec.field(default=None, name="collectionName")


class TextToImageBody(msgspec.Struct):
    prompt: str


# ---------------------------------------------------------------------------------- folders


class FoldersBody(msgspec.Struct):
    file_url: str | None = msgspec.field(default=None, name="fileUrl")
    file_id: str | None = msgspec.field(default=None, name="fileId")
    api_folder_id: str | None = msgspec.field(default=None, name="apiFolderId")
    collection_name: str | None = msgspec.field(default=None, name="collectionName")


class AddWebUrlBody(msgspec.Struct):
    web_url: str = msgspec.field(name="webUrl")
    deep_level: int = 1
    max_links: int = 10
    api_folder_id: str | None = msgspec.field(default=None, name="apiFolderId")
    collection_name: str | None = msgspec.field(default=None, name="collectionName")


class SimilarSentencesBody(msgspec.Struct):
    query: str
    api_folder_id: str = msgspec.field(name="apiFolderId")
    top: int = 10
    similarity_threshold: float = 0.4
    collection_name: str | None = msgspec.field(default=None, name="collectionName")


class FolderFilesBody(msgspec.Struct):
    api_folder_id: str = msgspec.field(name="apiFolderId")
    collection_name: str | None = msgspec.field(default=None, name="collectionName")


class DeleteCollectionBody(msgspec.Struct):
    folder_id: str
    collection_name: str


class DeleteElementBody(msgspec.Struct):
    folder_id: str
    collection_name: str
    element_id: str


class UploadedFile(msgspec.Struct):
    file_id: str
    file_name: str = msgspec.field(name="fileName")
    bytes: int


class RobinFolder(msgspec.Struct):
    api_folder_id: str = msgspec.field(name="apiFolderId")
    created_at: datetime = msgspec.field(name="createdAt")


class RobinFile(msgspec.Struct):
    url: str
    tokens: int | None
    document_id: str | None = msgspec.field(name="documentId")
    created_at: datetime = msgspec.field(name="createdAt")


class FolderAnswer(msgspec.Struct):
    """The `folders` answer; `document` (ours) carries the indexing status."""

    folder: RobinFolder
    file: RobinFile
    file_id: str
    document: dict[str, Any]


class Message(msgspec.Struct):
    message: str
    deleted: int


# ---------------------------------------------------------------------------------- fine-tuning


class StartFineTuningBody(msgspec.Struct):
    model: str
    task: str
    media_id: str = msgspec.field(name="mediaId")
    params_output: str | None = msgspec.field(default=None, name="paramsOutput")
    params_input: dict[str, Any] | None = msgspec.field(default=None, name="paramsInput")
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    sub_category: str | None = msgspec.field(default=None, name="subCategory")
    description: str | None = None
    extension: str | None = None


class FineTuningStarted(msgspec.Struct):
    FineTuningid: str  # the client's spelling
    status: str


class FineTuningTestBody(msgspec.Struct):
    fine_tuning_id: str = msgspec.field(name="fineTuningId")
    params_input: dict[str, Any] = msgspec.field(name="paramsInput")
    max_tokens: int | None = msgspec.field(default=None, name="maxTokens")
    temperature: float | None = None


class FileTestBody(msgspec.Struct):
    fine_tuning_id: str = msgspec.field(name="fineTuningId")
    link_data_set: str = msgspec.field(name="linkDataSet")


class DataMedia(msgspec.Struct):
    id: str
    num_rows: int = msgspec.field(name="numRows")
    colums: list[str]  # sic: the client's spelling
    data: str
    description: str | None


class MediaRecord(msgspec.Struct):
    id: str
    name: str
    description: str | None
    url: str
    width: int | None
    height: int | None
    source: str
    bytes_size: str = msgspec.field(name="bytesSize")
    document_id: str | None = msgspec.field(name="documentId")
    extension: str
    due_at: str | None = msgspec.field(name="dueAt")
    created_at: datetime = msgspec.field(name="createdAt")
    parent_entity: str | None = msgspec.field(name="parentEntity")
    parent_entity_type: str | None = msgspec.field(name="parentEntityType")
    type: str
    children: list[str]
    user_tags: list[str] = msgspec.field(name="userTags")
    data_media: DataMedia = msgspec.field(name="dataMedia")
    purpose: str | None = None


class Testing(msgspec.Struct):
    """One evaluation run of a fine-tuned model (`fie-test`)."""

    id: str
    status: str
    dataset_id: str | None = msgspec.field(name="datasetId")
    total: int
    done: int
    failed: int
    accuracy: float | None
    metrics: dict[str, Any]
    error: str | None
    created_at: datetime = msgspec.field(name="createdAt")
    finished_at: datetime | None = msgspec.field(name="finishedAt")


class FineTuningItem(msgspec.Struct):
    id: str
    model: str
    sub_category: str = msgspec.field(name="subCategory")
    description: str
    url_dataset: str | None = msgspec.field(name="urlDataset")
    url_images: str | None = msgspec.field(name="urlImages")
    training_parameters: str = msgspec.field(name="trainingParameters")  # a JSON string, as the client expects
    params_input: str | None = msgspec.field(name="paramsInput")
    progress: int
    testings: list[Testing]
    task: str
    status: str
    fine_tuned_model: str | None = msgspec.field(name="fineTunedModel")
    applied_parameters: dict[str, Any] = msgspec.field(name="appliedParameters")
    not_applied_parameters: list[str] = msgspec.field(name="notAppliedParameters")
    error: str | None
    created_at: datetime = msgspec.field(name="createdAt")


class PageLink(msgspec.Struct):
    url: str | None
    label: str
    active: bool


class PageLinks(msgspec.Struct):
    first: str
    last: str
    prev: str | None
    next: str | None


class PageMeta(msgspec.Struct):
    current_page: int
    from_: int | None = msgspec.field(name="from")
    last_page: int
    links: list[PageLink]
    path: str
    per_page: int
    to: int
    total: int


class FineTuningPage(msgspec.Struct):
    data: list[FineTuningItem]
    links: PageLinks
    meta: PageMeta


class TestRow(msgspec.Struct):
    row: int
    input: str
    expected: str
    answer: str | None
    correct: bool | None
    scores: dict[str, Any] | None
    error: str | None


class FileTestResult(msgspec.Struct):
    testing: Testing
    fine_tuning_id: str = msgspec.field(name="fineTuningId")
    task: str
    results: list[TestRow]
