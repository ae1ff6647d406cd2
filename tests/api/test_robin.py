"""The published RobinApi client (`robin-api` 2.24), unchanged, against this service on loopback.

The client is synchronous (httpx.Client), so these tests are plain functions; the service runs
in its own thread (`serve_in_thread`). Every flow runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, MediaType, get
from robin_api import RobinAIClient
from robin_api.types import ApiResponse, ChatCompletion, ChatCompletionChunk, MetricsChunk

from finetune_service.app import create_app
from finetune_service.services.retrieval import NO_CONTEXT_ANSWER
from finetune_service.settings import Settings
from tests.conftest import KEY_A, KEY_B
from tests.emulators.server import serve_in_thread

FACT = "The capital of Zubrowka is Lutz, a city famous for its pink pastry boxes."
DOCUMENT = (
    "Zubrowka travel notes.\n\n" + FACT + "\n\n"
    "The Grand Budapest Hotel stands high in the Alpine mountains above the town of Nebelsbad.\n\n"
    "Mendl's bakery delivers cakes every morning before sunrise."
)
QA = [
    ("How do I reset my password?", "Use the Forgot password link on the login page."),
    ("Where is my order?", "Orders ship within two days; track them under Account, Orders."),
    ("Can I return an item?", "Returns are accepted within 30 days for a full refund."),
    ("Do you ship abroad?", "We ship to 40 countries; customs fees are paid on delivery."),
    ("How do I change my email address?", "Open Settings, Profile and edit the email field."),
    ("Is there a student discount?", "Students get 50 percent off Pro with a school email."),
    ("How do I cancel my subscription?", "Cancel any time under Billing; you keep access until the period ends."),
    ("What payment methods do you accept?", "We accept cards, PayPal and bank transfer."),
    ("How can I contact support?", "Write to help@example.com or use the chat in the app."),
    ("Can I change my username?", "Usernames can be changed once a month in Settings."),
]
LABELS = [
    ("I love this product, it works perfectly", "positive"),
    ("Terrible experience, it broke after a day", "negative"),
    ("Absolutely fantastic support team", "positive"),
    ("The worst purchase I have ever made", "negative"),
    ("Great value and fast delivery", "positive"),
    ("Awful quality and rude staff", "negative"),
]
LM_PARAMS = {"optim": "adamw_torch", "learning_rate": 0.0002, "max_grad_norm": 0.3, "num_train_epochs": 2,
             "evaluation_strategy": "steps", "eval_steps": 10, "warmup_ratio": 0.03, "save_strategy": "no",
             "group_by_length": True, "lr_scheduler_type": "cosine"}
CLS_PARAMS = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
              "warmup_steps": 0, "weight_decay": 0.01, "logging_strategy": "steps", "logging_steps": 10,
              "evaluation_strategy": "steps", "eval_steps": 10, "save_strategy": "no", "fp16": False,
              "load_best_model_at_end": False}


def robin(base: str, key: str = KEY_A) -> RobinAIClient:
    """The README's subclass trick: the client ignores its `base_url` argument."""

    class LocalRobin(RobinAIClient):
        base_url = f"{base}/api/api-response-service/"

    return LocalRobin(api_key=key, base_url="unused")


@pytest.fixture
def base(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(dataclasses.replace(settings, fetch_allowlist=("127.0.0.1",)))) as url:
        yield url


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def error_of(value: Any, status: int) -> str:
    assert isinstance(value, ApiResponse), value
    assert value.status_code == status, value
    return str(value.message)


def raw(base: str, path: str) -> Any:
    """What the client's models drop (they ignore keys they do not declare)."""
    response = httpx.get(f"{base}/api/api-response-service/{path}", headers={"Authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 200, response.text
    return response.json()


def wait_trained(client: RobinAIClient, fine_tuning_id: str) -> Any:
    for _ in range(200):
        item = client.fine_tuning.get_fine_tuning_detail(fine_tuning_id)
        assert not isinstance(item, ApiResponse), item
        if item.progress == 100:
            return item
        time.sleep(0.05)
    raise AssertionError("the fine-tune never finished")


# ---------------------------------------------------------------------------------- completions


def test_completion_plain_streamed_and_tools(base: str) -> None:
    client = robin(base)
    conversation = [{"role": "user", "content": "hello robin, how are you today"}]
    answer = client.completions.create(model="ROBIN_3", conversation=conversation, max_tokens=64,
                                       temperature=0.2, save_response=False)
    assert isinstance(answer, ChatCompletion), answer
    assert answer.choices[0].message.content == "[sandbox] You said: hello robin, how are you today"
    assert answer.choices[0].finish_reason == "stop" and answer.usage and answer.usage.completion_tokens

    events = list(robin(base).completions.create_stream(model="ROBIN_4", conversation=conversation, max_tokens=64,
                                                        temperature=0.2, save_response=True))
    chunks = [e for e in events if isinstance(e, ChatCompletionChunk)]
    metrics = [e for e in events if isinstance(e, MetricsChunk)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].delta) == \
        "[sandbox] You said: hello robin, how are you today"
    assert len(metrics) == 1 and events[-1] is metrics[0]
    assert metrics[0].details.tokens_generated == answer.usage.completion_tokens == 9
    assert metrics[0].details.tokens_input == answer.usage.prompt_tokens > 0
    assert metrics[0].choices[0].finish_reason == "stop"

    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    called = robin(base).completions.create(
        model="ROBIN_4_TOOLS", conversation=[{"role": "user", "content": "Use get_weather with city=Paris"}],
        max_tokens=64, temperature=0.0, save_response=False, tools=tools)
    assert isinstance(called, ChatCompletion), called
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    plain = robin(base).completions.create(
        model="ROBIN_4_TOOLS", conversation=[{"role": "user", "content": "Just say hi"}], max_tokens=64,
        temperature=0.0, save_response=False, tools=tools)
    assert isinstance(plain, ChatCompletion) and plain.choices[0].message.tool_calls is None


def test_completion_errors_are_readable(base: str) -> None:
    wrong = robin(base, "not-a-key").completions.create(
        model="ROBIN_3", conversation=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.1,
        save_response=False)
    assert "Invalid API key" in error_of(wrong, 401)
    unknown = robin(base).completions.create(model="sandbox/nope", conversation=[{"role": "user", "content": "hi"}],
                                             max_tokens=5, temperature=0.1, save_response=False)
    assert "sandbox/nope" in error_of(unknown, 404)
    bad = robin(base).completions.create(model="ROBIN_3", conversation=[{"role": "user", "content": "hi"}],
                                         max_tokens=5, temperature=7.0, save_response=False)
    assert "temperature" in error_of(bad, 400)
    response = httpx.post(f"{base}/api/api-response-service/get-response", headers={"Authorization":
                          f"Bearer {KEY_A}"}, json={"conversation": []})
    assert response.status_code == 400 and "model" in response.json()["detail"]


# ---------------------------------------------------------------------------------- folders


def wait_indexed(client: RobinAIClient, folder_id: str, at_least: int = 1) -> Any:
    for _ in range(200):
        docs = client.files.get_folder_files(api_folder_id=folder_id)
        assert not isinstance(docs, ApiResponse), docs
        if docs.count >= at_least:
            return docs
        time.sleep(0.05)
    raise AssertionError("the document was never indexed")


def test_folders_grounded_answers_and_deletes(base: str, tmp_path: Path) -> None:
    client = robin(base)
    path = tmp_path / "zubrowka.txt"
    path.write_text(DOCUMENT)
    uploaded = client.files.upload_local_file(file=str(path), purpose="assistants")
    assert uploaded.file_id.startswith("doc_")
    folder_id = uploaded.folder["apiFolderId"]  # extra keys stay on the client's model
    docs = wait_indexed(client, folder_id)
    assert any(FACT in d.sentence for d in docs.docs) and docs.docs[0].metadata.file_name == "zubrowka.txt"

    similar = client.files.get_similar_sentences(query="What is the capital of Zubrowka?", api_folder_id=folder_id,
                                                 top=3, similarity_threshold=0.1)
    assert "Lutz" in similar.sentences[0].sentence and similar.sentences[0].metadata.source_url is None

    question = [{"role": "user", "content": "What is the capital of Zubrowka?"}]
    grounded = client.files.get_response_similar_sentences(
        conversation=question, api_folder_id=folder_id, model="ROBIN_4", only_with_context=True, top=3,
        similarity_threshold=0.1, max_new_tokens=200)
    assert isinstance(grounded, ChatCompletion), grounded
    assert "Lutz" in (grounded.choices[0].message.content or "")
    streamed = list(client.files.get_response_similar_sentences_stream(
        conversation=question, api_folder_id=folder_id, model="ROBIN_4", only_with_context=True, top=3,
        similarity_threshold=0.1, max_new_tokens=200))
    text = "".join(e.choices[0].delta.content or "" for e in streamed
                   if isinstance(e, ChatCompletionChunk) and e.choices[0].delta)
    assert "Lutz" in text and isinstance(streamed[-1], MetricsChunk)
    assert streamed[-1].details.tokens_input > 0 and streamed[-1].details.tokens_generated > 0
    nothing = client.files.get_response_similar_sentences(
        conversation=[{"role": "user", "content": "quantum chromodynamics gluon plasma"}], api_folder_id=folder_id,
        model="ROBIN_4", only_with_context=True, similarity_threshold=0.99, max_new_tokens=50)
    assert nothing.choices[0].message.content == NO_CONTEXT_ANSWER

    # a second file into the same folder, in a named collection
    other = tmp_path / "bakery.md"
    other.write_text("# Bakery\n\nCourtesan au chocolat is the signature pastry of Mendl's.")
    stash = httpx.post(f"{base}/api/api-response-service/upload-file", headers={"Authorization": f"Bearer {KEY_A}"},
                       files={"file": ("bakery.md", other.read_bytes())}).json()
    added = client.files.upload_file(file_id=stash["file_id"], folder_id=folder_id, collection_name="bakery")
    assert added.folder.apiFolderId == folder_id and added.file.url.startswith("http")
    wait_indexed(client, folder_id, at_least=docs.count + 1)

    assert "404" in error_of(robin(base, KEY_B).files.get_folder_files(api_folder_id=folder_id), 404)
    assert error_of(robin(base, KEY_B).files.delete_all_documents(folder_id=folder_id, collection_name="default"), 404)

    before = client.files.get_folder_files(api_folder_id=folder_id, collection_name="default")
    element = next(d.metadata.element_id for d in before.docs if FACT in d.sentence)
    deleted = client.files.delete_element(folder_id=folder_id, collection_name="default", element_id=element)
    assert deleted.status_code == 200
    after = client.files.get_folder_files(api_folder_id=folder_id, collection_name="default")
    assert after.count == before.count - 1 and all(FACT not in d.sentence for d in after.docs)
    again = client.files.delete_element(folder_id=folder_id, collection_name="default", element_id=element)
    assert element in error_of(again, 404)

    dropped = client.files.delete_all_documents(folder_id=folder_id, collection_name="default")
    assert dropped.status_code == 200 and "deleted" in dropped.message["message"]
    left = client.files.get_folder_files(api_folder_id=folder_id)
    assert left.count >= 1 and all("Courtesan" in d.sentence or "Bakery" in d.sentence for d in left.docs)


def test_folder_from_web_pages_and_bad_input(base: str, tmp_path: Path) -> None:
    @get("/zubrowka.html", media_type=MediaType.HTML)
    async def page() -> str:
        return f"<html><body><h1>Zubrowka</h1><p>{FACT}</p><a href='/more.html'>more</a></body></html>"

    @get("/more.html", media_type=MediaType.HTML)
    async def more() -> str:
        return "<html><body><p>Nebelsbad hosts a famous spa in winter.</p></body></html>"

    client = robin(base)
    with serve_in_thread(Litestar([page, more])) as site:
        answer = client.files.upload_web_page_information(url=f"{site}/zubrowka.html", deep_level=2, max_links=5)
        assert answer.file.url == f"{site}/zubrowka.html", answer
        docs = wait_indexed(client, answer.folder.apiFolderId)
        texts = " ".join(d.sentence for d in docs.docs)
        assert "Lutz" in texts and "Nebelsbad hosts" in texts

    empty = tmp_path / "empty.exe"
    empty.write_bytes(b"MZ\x00\x01binary")
    headers = {"Authorization": f"Bearer {KEY_A}"}
    stash = httpx.post(f"{base}/api/api-response-service/upload-file", headers=headers,
                       files={"file": ("tool.exe", empty.read_bytes())}).json()
    refused = client.files.upload_file(file_id=stash["file_id"], collection_name="default")
    assert "tool.exe" in error_of(refused, 422)  # a 415, shown as 422: the client hides other statuses
    missing = client.files.upload_file(file_id="rf_000000000000000000000000", collection_name="default")
    assert "does not exist" in error_of(missing, 404)
    both = httpx.post(f"{base}/api/api-response-service/folders", headers=headers, json={})
    assert both.status_code == 422 and "fileUrl" in both.json()["detail"]
    no_file = httpx.post(f"{base}/api/api-response-service/upload-file", headers=headers, data={"x": "1"},
                         files={"other": ("a.txt", b"a")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]


# ---------------------------------------------------------------------------------- fine-tuning


def test_language_modeling_fine_tune_end_to_end(base: str, tmp_path: Path) -> None:
    client = robin(base)
    train = write_csv(tmp_path / "support.csv", ("question", "answer", "product"),
                      [(q, a, "Acme") for q, a in QA])
    media = client.fine_tuning.upload_local_file(train, "train", "support answers")
    assert media.id.startswith("ds_") and media.dataMedia.numRows == 10
    assert media.dataMedia.colums == ["question", "answer", "product"] and media.extension == "csv"

    started = client.fine_tuning.star_fine_tuning(
        model="ROBIN_3", task="language-modeling", sub_category="support", media_id=media.id,
        description="support bot", params=LM_PARAMS, params_input={"input_template": "{question} ({product})"},
        params_output="answer", extension="csv")
    job_id = started.FineTuningid
    item = wait_trained(client, job_id)
    assert item.model == "ROBIN_3" and item.subCategory == "support" and json.loads(item.trainingParameters) == \
        LM_PARAMS
    assert json.loads(item.paramsInput) == {"input_template": "{question} ({product})"}
    extra = raw(base, f"fine-tuning/{job_id}")
    assert extra["status"] == "succeeded" and extra["fineTunedModel"].startswith("sandbox-ft:")
    assert extra["appliedParameters"] == {"n_epochs": 2, "learning_rate": 0.0002}
    assert "optim" in extra["notAppliedParameters"] and "lr_scheduler_type" in extra["notAppliedParameters"]

    reply = client.fine_tuning.fine_tuning_test({"question": QA[2][0], "product": "Acme"}, job_id, temperature=0.0)
    assert reply["choices"][0]["message"]["content"] == QA[2][1]
    missing = client.fine_tuning.fine_tuning_test({"product": "Acme"}, job_id, temperature=0.0)
    assert "question" in error_of(missing, 422)

    page = client.fine_tuning.get_fine_tuning_results(page=1, limit=10)
    assert [d.id for d in page.data] == [job_id] and page.meta.total == 1 and page.data[0].progress == 100
    assert robin(base, KEY_B).fine_tuning.get_fine_tuning_results().meta.total == 0
    assert job_id in error_of(robin(base, KEY_B).fine_tuning.get_fine_tuning_detail(job_id), 404)

    test_set = write_csv(tmp_path / "check.csv", ("question", "answer", "product"),
                         [(q, a, "Acme") for q, a in QA[:4]] + [("Totally unrelated zebra query", "none", "Acme")])
    check = client.fine_tuning.upload_local_file(test_set, "test", "held out")
    report = client.fine_tuning.fine_tuning_file_test(check.url, job_id)
    assert report["testing"]["status"] == "succeeded" and report["testing"]["total"] == 5
    assert [r["correct"] for r in report["results"]] == [True, True, True, True, False]
    assert report["results"][0]["input"] == f"{QA[0][0]} (Acme)"
    assert report["testing"]["metrics"]["fine_tuned"]["exact_match"] == 0.8
    assert [t["id"] for t in client.fine_tuning.get_fine_tuning_detail(job_id).testings] == [report["testing"]["id"]]


def test_classification_fine_tune_is_scored_by_accuracy(base: str, tmp_path: Path) -> None:
    client = robin(base)
    media = client.fine_tuning.upload_local_file(write_csv(tmp_path / "reviews.csv", ("text", "label"), LABELS),
                                                 "train", "reviews")
    started = client.fine_tuning.star_fine_tuning(
        model="sandbox/sandbox-chat-small", task="classification-text", sub_category="sentiment", media_id=media.id,
        description="sentiment", params=CLS_PARAMS, params_input={"input_template": "Review: {text}"},
        params_output="label", extension="csv")
    wait_trained(client, started.FineTuningid)
    report = client.fine_tuning.fine_tuning_file_test(media.id, started.FineTuningid)
    assert report["task"] == "classification-text" and report["testing"]["accuracy"] == 1.0
    assert {r["answer"] for r in report["results"]} == {"positive", "negative"}


def test_fine_tune_refusals_name_the_problem(base: str, tmp_path: Path) -> None:
    client = robin(base)
    media = client.fine_tuning.upload_local_file(write_csv(tmp_path / "qa.csv", ("question", "answer"), QA),
                                                 "train", "qa")

    def start(**changes: Any) -> Any:
        args: dict[str, Any] = {"model": "ROBIN_3", "task": "language-modeling", "sub_category": "qa",
                                "media_id": media.id, "description": "d", "params": LM_PARAMS,
                                "params_input": {"input_template": "{question}"}, "params_output": "answer",
                                "extension": "csv"} | changes
        return client.fine_tuning.star_fine_tuning(**args)

    assert "text-to-images" in error_of(start(task="text-to-images", params={}), 422)
    assert "'topic'" in error_of(start(params_input={"input_template": "{topic}"}), 422)
    assert "'reply'" in error_of(start(params_output="reply"), 422)
    assert "ds_000000000000000000000000" in error_of(start(media_id="ds_000000000000000000000000"), 404)
    assert "input_template" in error_of(start(params_input={}), 422)
    assert "provider" in error_of(start(model="gpt-unknown"), 422)
    assert "n_epochs" in error_of(start(params=LM_PARAMS | {"num_train_epochs": 500}), 422)

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"question,answer\n\"unterminated,quote\n")
    headers = {"Authorization": f"Bearer {KEY_A}"}
    refused = httpx.post(f"{base}/api/api-response-service/fine-tuning/upload-data-set", headers=headers,
                         files={"file": ("bad.csv", bad.read_bytes())}, data={"purpose": "train"})
    assert refused.status_code == 422 and refused.json()["detail"]
    wrong_purpose = httpx.post(f"{base}/api/api-response-service/fine-tuning/upload-data-set", headers=headers,
                               files={"file": ("qa.csv", b"question,answer\na,b\n")}, data={"purpose": "eval"})
    assert wrong_purpose.status_code == 422 and "purpose" in wrong_purpose.json()["detail"]
    not_ours = client.fine_tuning.fine_tuning_file_test("https://elsewhere.example/data.csv", "ftjob_x")
    assert "ftjob_x" in error_of(not_ours, 404)


def test_file_test_fetches_a_data_set_url(base: str, tmp_path: Path) -> None:
    client = robin(base)
    train = write_csv(tmp_path / "support.csv", ("question", "answer"), QA)
    media = client.fine_tuning.upload_local_file(train, "train", "support answers")
    started = client.fine_tuning.star_fine_tuning(
        model="ROBIN_3", task="language-modeling", sub_category="support", media_id=media.id, description="bot",
        params=LM_PARAMS, params_input={"input_template": "{question}"}, params_output="answer", extension="csv")
    wait_trained(client, started.FineTuningid)
    held_out = "question,answer\n" + "".join(f'"{q}","{a}"\n' for q, a in QA[:3]) + "zebra?,none\n"

    @get("/sets/held-out.csv", media_type="text/csv")
    async def held_out_set() -> str:
        return held_out

    with serve_in_thread(Litestar([held_out_set])) as site:
        report = client.fine_tuning.fine_tuning_file_test(f"{site}/sets/held-out.csv", started.FineTuningid)
    assert report["testing"]["total"] == 4
    assert [r["correct"] for r in report["results"]] == [True, True, True, False]
    private = client.fine_tuning.fine_tuning_file_test("http://10.0.0.1/sets/data.csv", started.FineTuningid)
    assert "10.0.0.1" in error_of(private, 422)


# ---------------------------------------------------------------------------------- images


def test_text_to_image_is_a_fetchable_signed_link(base: str) -> None:
    image = robin(base).completions.text_to_image(prompt="a pink pastry box on a mountain")
    fetched = httpx.get(image.url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content.startswith(b"\x89PNG") and b"Sandbox image" in fetched.content
    tampered = httpx.get(image.url.replace("signature=", "signature=0"))
    assert tampered.status_code == 403
    empty = robin(base).completions.text_to_image(prompt="  ")
    assert "prompt" in str(empty)
