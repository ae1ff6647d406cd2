"""The emulators' wire bodies against the providers' published contracts.

OpenAI: every response the emulator serves is validated against OpenAI's OpenAPI 3.1 spec
(`shared/specs/openai-openapi.yaml`, loaded once per session) with jsonschema Draft 2020-12,
`$ref`s resolved inside the spec's `components/schemas`. Fireworks publishes no spec we hold,
so its emulator is checked against the shapes documented in `shared/specs/PROVIDERS.md` §3.
Raw `httpx` is used (not the SDKs) so the exact JSON on the wire is what gets validated.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.emulators.fireworks import FireworksEmulator, create_fireworks_emulator
from tests.emulators.openai import OpenAIEmulator, create_openai_emulator
from tests.emulators.server import serve_in_thread

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs"
SPEC_URI = "urn:openai-openapi"
OPENAI_KEY = "test-openai-key"
FIREWORKS_KEY = "test-fireworks-key"


def _nullable_to_2020(node: Any) -> Any:
    """The spec still uses OpenAPI 3.0's `nullable: true` in places; express it as JSON Schema."""
    if isinstance(node, list):
        return [_nullable_to_2020(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_2020(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if "$ref" in out or "type" not in out:
            return {"anyOf": [out, {"type": "null"}]}
        kind = out["type"]
        out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


@cache
def _openai_spec() -> dict[str, Any]:
    with (SPECS / "openai-openapi.yaml").open("rb") as handle:
        spec = yaml.load(handle, Loader=yaml.CSafeLoader)
    return {"components": {"schemas": _nullable_to_2020(spec["components"]["schemas"])}, "paths": spec["paths"]}


class OpenAIContract:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents({"components": spec["components"]}, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, schema_name: str) -> Draft202012Validator:
        if schema_name not in self._validators:
            assert schema_name in self.spec["components"]["schemas"], schema_name
            self._validators[schema_name] = Draft202012Validator(
                {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}, registry=self.registry,
            )
        return self._validators[schema_name]

    def errors(self, schema_name: str, body: Any) -> list[str]:
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in self.validator(schema_name).iter_errors(body)]

    def check(self, schema_name: str, body: Any) -> None:
        problems = self.errors(schema_name, body)
        assert not problems, f"{schema_name} violations:\n" + "\n".join(problems[:20])

    def response_schema(self, path: str, method: str, status: str = "200") -> str:
        """The component a spec operation says it answers with (so we validate what the spec means)."""
        content = self.spec["paths"][path][method]["responses"][status]["content"]["application/json"]
        return str(content["schema"]["$ref"]).rsplit("/", 1)[-1]


@pytest.fixture(scope="session")
def contract() -> OpenAIContract:
    return OpenAIContract(_openai_spec())


@pytest.fixture(scope="module")
def openai_emulator() -> OpenAIEmulator:
    return create_openai_emulator(api_key=OPENAI_KEY, step_seconds=0.05)


@pytest.fixture(scope="module")
def oai(openai_emulator: OpenAIEmulator) -> Iterator[httpx.Client]:
    with serve_in_thread(openai_emulator.app) as url, httpx.Client(
        base_url=f"{url}/v1", headers={"Authorization": f"Bearer {OPENAI_KEY}"}, timeout=10,
    ) as client:
        yield client


def _chat_jsonl(n: int) -> bytes:
    return "\n".join(json.dumps({"messages": [
        {"role": "user", "content": f"What is {i} squared?"},
        {"role": "assistant", "content": f"{i} squared is {i * i}."},
    ]}) for i in range(n)).encode()


def _upload(client: httpx.Client, content: bytes, name: str = "train.jsonl") -> dict[str, Any]:
    response = client.post("/files", data={"purpose": "fine-tune"}, files={"file": (name, content)})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if body["status"] == status:
            return dict(body)
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.02)


def _sse_payloads(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


@pytest.fixture(scope="module")
def succeeded_job(oai: httpx.Client) -> dict[str, Any]:
    file = _upload(oai, _chat_jsonl(12))
    created = oai.post("/fine_tuning/jobs", json={
        "model": "gpt-4o-mini-2024-07-18", "training_file": file["id"], "suffix": "contract",
        "metadata": {"client_reference": "c-1"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    })
    assert created.status_code == 200, created.text
    return _wait_status(oai, created.json()["id"], "succeeded")


# ------------------------------------------------------------------------------- OpenAI


def test_validator_catches_violations(contract: OpenAIContract) -> None:
    """Guard against a validator that accepts anything (e.g. an unresolved $ref)."""
    assert contract.errors("OpenAIFile", {"id": "file-1", "object": "file"})  # missing required keys
    assert contract.errors("FineTuningJob", {"status": "done"})
    assert contract.errors("ErrorResponse", {"error": {"message": "m", "type": "t"}})  # param/code required
    assert not contract.errors("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None,
                                                           "code": None}})


def test_files(contract: OpenAIContract, oai: httpx.Client) -> None:
    uploaded = _upload(oai, _chat_jsonl(10))
    contract.check(contract.response_schema("/files", "post"), uploaded)
    _upload(oai, _chat_jsonl(11), "second.jsonl")
    listed = oai.get("/files", params={"purpose": "fine-tune", "limit": 1})
    contract.check(contract.response_schema("/files", "get"), listed.json())
    assert listed.json()["has_more"] is True and len(listed.json()["data"]) == 1
    contract.check(contract.response_schema("/files/{file_id}", "get"), oai.get(f"/files/{uploaded['id']}").json())
    assert oai.get(f"/files/{uploaded['id']}/content").content == _chat_jsonl(10)
    deleted = oai.delete(f"/files/{uploaded['id']}").json()
    contract.check(contract.response_schema("/files/{file_id}", "delete"), deleted)
    assert deleted["deleted"] is True


def test_fine_tuning_job_list_events_checkpoints(
    contract: OpenAIContract, oai: httpx.Client, succeeded_job: dict[str, Any]
) -> None:
    job_schema = contract.response_schema("/fine_tuning/jobs/{fine_tuning_job_id}", "get")
    contract.check(job_schema, succeeded_job)
    assert succeeded_job["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert succeeded_job["trained_tokens"] > 0 and succeeded_job["result_files"]

    listed = oai.get("/fine_tuning/jobs", params={"metadata[client_reference]": "c-1", "limit": 5}).json()
    contract.check(contract.response_schema("/fine_tuning/jobs", "get"), listed)
    assert [j["id"] for j in listed["data"]] == [succeeded_job["id"]]

    events = oai.get(f"/fine_tuning/jobs/{succeeded_job['id']}/events", params={"limit": 4}).json()
    contract.check(contract.response_schema("/fine_tuning/jobs/{fine_tuning_job_id}/events", "get"), events)
    assert events["has_more"] is True and events["data"][0]["message"] == "The job has successfully completed"
    more = oai.get(f"/fine_tuning/jobs/{succeeded_job['id']}/events",
                   params={"limit": 100, "after": events["data"][-1]["id"]}).json()
    contract.check("ListFineTuningJobEventsResponse", more)
    assert more["data"][-1]["message"].startswith("Created fine-tuning job")

    checkpoints = oai.get(f"/fine_tuning/jobs/{succeeded_job['id']}/checkpoints").json()
    contract.check(contract.response_schema("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", "get"),
                   checkpoints)
    assert len(checkpoints["data"]) == 2


def test_job_create_cancel_failed_and_paused(
    contract: OpenAIContract, oai: httpx.Client, openai_emulator: OpenAIEmulator
) -> None:
    openai_emulator.step_seconds = 0.3  # wide enough windows to cancel / catch `running`, then restored
    try:
        _job_lifecycle_shapes(contract, oai, openai_emulator)
    finally:
        openai_emulator.step_seconds = 0.05


def _job_lifecycle_shapes(contract: OpenAIContract, oai: httpx.Client, openai_emulator: OpenAIEmulator) -> None:
    file = _upload(oai, _chat_jsonl(10))
    created = oai.post("/fine_tuning/jobs", json={"model": "gpt-4.1-mini-2025-04-14", "training_file": file["id"]})
    contract.check(contract.response_schema("/fine_tuning/jobs", "post"), created.json())
    assert created.json()["status"] == "validating_files"
    cancelled = oai.post(f"/fine_tuning/jobs/{created.json()['id']}/cancel").json()
    contract.check(contract.response_schema("/fine_tuning/jobs/{fine_tuning_job_id}/cancel", "post"), cancelled)
    assert cancelled["status"] == "cancelled"

    failing = oai.post("/fine_tuning/jobs", json={"model": "gpt-4.1-mini-2025-04-14",
                                                  "training_file": file["id"]}).json()
    openai_emulator.fail_job(failing["id"], "The job failed due to an internal error.")
    failed = oai.get(f"/fine_tuning/jobs/{failing['id']}").json()
    contract.check("FineTuningJob", failed)
    assert failed["error"]["message"] == "The job failed due to an internal error."

    job = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-2024-08-06", "training_file": file["id"],
                                              "method": {"type": "supervised"}}).json()
    _wait_status(oai, job["id"], "running")
    paused = oai.post(f"/fine_tuning/jobs/{job['id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    # The spec's status enum lacks "paused" although its own pause example returns it (PROVIDERS.md §2.3):
    # that is the only deviation allowed.
    problems = contract.errors("FineTuningJob", paused.json())
    assert len(problems) == 1 and problems[0].startswith("status:")
    contract.check("FineTuningJob", {**paused.json(), "status": "running"})
    resumed = oai.post(f"/fine_tuning/jobs/{job['id']}/resume").json()
    contract.check("FineTuningJob", resumed)


def test_chat_completion_plain_and_streamed(
    contract: OpenAIContract, oai: httpx.Client, succeeded_job: dict[str, Any]
) -> None:
    request = {"model": succeeded_job["fine_tuned_model"],
               "messages": [{"role": "user", "content": "What is 7 squared?"}]}
    plain = oai.post("/chat/completions", json=request).json()
    contract.check(contract.response_schema("/chat/completions", "post"), plain)
    assert plain["choices"][0]["message"]["content"] == "7 squared is 49."

    with oai.stream("POST", "/chat/completions", json={**request, "stream": True,
                                                       "stream_options": {"include_usage": True}}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = _sse_payloads(response.read().decode())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        contract.check("CreateChatCompletionStreamResponse", chunk)
    assert all("usage" in c for c in chunks) and all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "7 squared is 49."

    with oai.stream("POST", "/chat/completions", json={**request, "stream": True}) as response:
        bare = [json.loads(p) for p in _sse_payloads(response.read().decode())[:-1]]
    assert all("usage" not in c for c in bare) and bare[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_and_models(contract: OpenAIContract, oai: httpx.Client, succeeded_job: dict[str, Any]) -> None:
    embedded = oai.post("/embeddings", json={"model": "text-embedding-3-small", "input": ["a b", "c"],
                                             "encoding_format": "float"}).json()
    contract.check(contract.response_schema("/embeddings", "post"), embedded)
    assert len(embedded["data"][1]["embedding"]) == 1536
    b64 = oai.post("/embeddings", json={"model": "text-embedding-3-small", "input": "a b",
                                        "encoding_format": "base64", "dimensions": 8}).json()
    assert isinstance(b64["data"][0]["embedding"], str) and len(b64["data"][0]["embedding"]) == 44  # 8 float32

    models = oai.get("/models").json()
    contract.check(contract.response_schema("/models", "get"), models)
    ids = {m["id"] for m in models["data"]}
    assert succeeded_job["fine_tuned_model"] in ids and "gpt-4o-mini-2024-07-18" in ids
    one = oai.get(f"/models/{succeeded_job['fine_tuned_model']}").json()
    contract.check("Model", one)


def test_errors(contract: OpenAIContract, oai: httpx.Client, openai_emulator: OpenAIEmulator) -> None:
    cases = [
        oai.get("/models", headers={"Authorization": "Bearer nope-nope-nope"}),
        oai.get("/fine_tuning/jobs/ftjob-missing"),
        oai.post("/fine_tuning/jobs", json={"model": "gpt-9", "training_file": "file-x"}),
        oai.post("/chat/completions", json={"model": "gpt-4o", "messages": []}),
        oai.post("/files", data={"purpose": "fine-tune"}, files={"file": ("x.txt", b"hello")}),
    ]
    openai_emulator.faults.add("GET", r"^/v1/models$", status=429, retry_after=1)
    limited = oai.get("/models")
    cases.append(limited)
    assert [r.status_code for r in cases] == [401, 404, 400, 400, 400, 429]
    for response in cases:
        contract.check("ErrorResponse", response.json())
    assert cases[0].json()["error"]["code"] == "invalid_api_key" and "nope-nope-nope" not in cases[0].text
    assert limited.headers["retry-after"] == "1" and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert all(r.headers.get("x-should-retry") == "false" for r in cases[:5])
    assert "x-should-retry" not in limited.headers


def test_training_file_rules(oai: httpx.Client) -> None:
    few = _upload(oai, _chat_jsonl(9))
    response = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini-2024-07-18", "training_file": few["id"]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_n_examples"
    no_assistant = _upload(oai, "\n".join(json.dumps({"messages": [{"role": "user", "content": "q"}]})
                                          for _ in range(10)).encode())
    response = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini-2024-07-18",
                                                   "training_file": no_assistant["id"]})
    assert response.status_code == 400 and "assistant" in response.json()["error"]["message"]
    chat = _upload(oai, _chat_jsonl(10))
    response = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini-2024-07-18", "training_file": chat["id"],
                                                   "method": {"type": "dpo"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"
    broken = oai.post("/files", data={"purpose": "fine-tune"}, files={"file": ("b.jsonl", b'{"messages": [\n')})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_file_format"


# ------------------------------------------------------------------------------- Fireworks (PROVIDERS.md §3)

FW_ACCOUNT = "test-account"
JOB_STATES = {
    "JOB_STATE_UNSPECIFIED", "JOB_STATE_CREATING", "JOB_STATE_PENDING", "JOB_STATE_VALIDATING", "JOB_STATE_RUNNING",
    "JOB_STATE_WRITING_RESULTS", "JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLING",
    "JOB_STATE_CANCELLED", "JOB_STATE_DELETING", "JOB_STATE_DELETING_CLEANING_UP", "JOB_STATE_EXPIRED",
    "JOB_STATE_RE_QUEUEING", "JOB_STATE_CREATING_INPUT_DATASET", "JOB_STATE_IDLE", "JOB_STATE_EARLY_STOPPED",
    "JOB_STATE_PAUSED",
}


@pytest.fixture(scope="module")
def fw_emulator() -> FireworksEmulator:
    return create_fireworks_emulator(api_key=FIREWORKS_KEY, account_id=FW_ACCOUNT, step_seconds=0.05)


@pytest.fixture(scope="module")
def fw(fw_emulator: FireworksEmulator) -> Iterator[httpx.Client]:
    with serve_in_thread(fw_emulator.app) as url, httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {FIREWORKS_KEY}"}, timeout=10,
    ) as client:
        yield client


def _rfc3339(value: str) -> None:
    assert value.endswith("Z") and "T" in value, value


def _grpc_error(response: httpx.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"code": code, "message": response.json()["message"], "details": []}
    assert response.json()["message"]


def test_fireworks_dataset_shapes(fw: httpx.Client) -> None:
    acct = f"/v1/accounts/{FW_ACCOUNT}"
    created = fw.post(f"{acct}/datasets", json={"datasetId": "geo-ds", "dataset": {
        "userUploaded": {}, "exampleCount": "3", "displayName": "Geo", "format": "CHAT"}})
    assert created.status_code == 200
    body = created.json()
    assert body["name"] == f"accounts/{FW_ACCOUNT}/datasets/geo-ds" and body["state"] == "UPLOADING"
    assert body["exampleCount"] == "3" and body["format"] == "CHAT" and body["userUploaded"] == {}
    _rfc3339(body["createTime"])
    _rfc3339(body["updateTime"])

    uploaded = fw.post(f"{acct}/datasets/geo-ds:upload", files={"file": ("train.jsonl", _chat_jsonl(3))})
    assert uploaded.status_code == 200
    assert set(uploaded.json()) >= {"id", "object", "bytes", "created_at", "filename", "purpose"}
    ready = fw.get(f"{acct}/datasets/geo-ds").json()
    assert ready["state"] == "READY" and ready["exampleCount"] == "3"

    listed = fw.get(f"{acct}/datasets", params={"pageSize": 200}).json()
    assert [d["name"] for d in listed["datasets"]] == [ready["name"]] and listed["totalSize"] == 1
    assert "nextPageToken" not in listed

    _grpc_error(fw.post(f"{acct}/datasets", json={"datasetId": "geo-ds", "dataset": {"format": "CHAT"}}), 409, 6)
    _grpc_error(fw.get(f"{acct}/datasets/missing"), 404, 5)
    _grpc_error(fw.post(f"{acct}/datasets", json={"datasetId": "9bad", "dataset": {}}), 400, 3)


def test_fireworks_job_shapes(fw: httpx.Client, fw_emulator: FireworksEmulator) -> None:
    fw_emulator.step_seconds = 0.15  # a `running` window wide enough to observe on a busy machine
    acct = f"/v1/accounts/{FW_ACCOUNT}"
    fw.post(f"{acct}/datasets", json={"datasetId": "jobs-ds", "dataset": {"format": "CHAT"}})
    pending = fw.post(f"{acct}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "early"},
                      json={"dataset": f"accounts/{FW_ACCOUNT}/datasets/jobs-ds",
                            "baseModel": "accounts/fireworks/models/qwen3-8b"})
    _grpc_error(pending, 400, 9)  # FAILED_PRECONDITION: dataset still UPLOADING
    fw.post(f"{acct}/datasets/jobs-ds:upload", files={"file": ("t.jsonl", _chat_jsonl(4))})

    body = {"dataset": f"accounts/{FW_ACCOUNT}/datasets/jobs-ds", "baseModel": "accounts/fireworks/models/qwen3-8b",
            "epochs": 2, "learningRate": 0.0002, "loraRank": 16, "displayName": "contract"}
    created = fw.post(f"{acct}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "sft-one"}, json=body)
    assert created.status_code == 200
    job = created.json()
    assert job["name"] == f"accounts/{FW_ACCOUNT}/supervisedFineTuningJobs/sft-one"
    assert job["state"] in JOB_STATES and job["state"] == "JOB_STATE_VALIDATING"
    assert job["epochs"] == 2 and job["loraRank"] == 16 and job["learningRate"] == 0.0002
    assert job["status"]["code"] == "OK" and job["baseModel"] == body["baseModel"]
    _rfc3339(job["createTime"])
    _grpc_error(fw.post(f"{acct}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "sft-one"},
                        json=body), 409, 6)
    assert len(fw_emulator.jobs) == 1

    deadline = time.monotonic() + 5
    seen = set()
    while (job := fw.get(f"{acct}/supervisedFineTuningJobs/sft-one").json())["state"] != "JOB_STATE_COMPLETED":
        seen.add(job["state"])
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert seen <= {"JOB_STATE_VALIDATING", "JOB_STATE_PENDING", "JOB_STATE_RUNNING"} and "JOB_STATE_RUNNING" in seen
    assert job["outputModel"] == f"accounts/{FW_ACCOUNT}/models/sft-one" and job["jobProgress"]["percent"] == 100
    _rfc3339(job["completedTime"])

    for i in range(2):
        fw.post(f"{acct}/supervisedFineTuningJobs", json={**body, "outputModel": f"other-{i}"})
    first = fw.get(f"{acct}/supervisedFineTuningJobs", params={"pageSize": 2}).json()
    assert len(first["supervisedFineTuningJobs"]) == 2 and first["totalSize"] == 3 and first["nextPageToken"]
    rest = fw.get(f"{acct}/supervisedFineTuningJobs",
                  params={"pageSize": 2, "pageToken": first["nextPageToken"]}).json()
    assert len(rest["supervisedFineTuningJobs"]) == 1 and "nextPageToken" not in rest

    other_id = rest["supervisedFineTuningJobs"][0]["name"].rsplit("/", 1)[-1]
    assert fw.post(f"{acct}/supervisedFineTuningJobs/{other_id}:cancel").json() == {}
    assert fw.get(f"{acct}/supervisedFineTuningJobs/{other_id}").json()["state"] == "JOB_STATE_CANCELLED"
    assert fw.delete(f"{acct}/supervisedFineTuningJobs/{other_id}").json() == {}
    _grpc_error(fw.get(f"{acct}/supervisedFineTuningJobs/{other_id}"), 404, 5)

    models = fw.get("/v1/accounts/fireworks/models").json()["models"]
    assert all(m["name"].startswith("accounts/fireworks/models/") and m["tunable"] for m in models)
    mine = fw.get(f"{acct}/models").json()["models"]
    assert [m["name"] for m in mine] == [job["outputModel"]]

    for prefix in ("/inference/v1", "/v1"):
        reply = fw.post(f"{prefix}/chat/completions", json={
            "model": job["outputModel"], "messages": [{"role": "user", "content": "What is 3 squared?"}]}).json()
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"] == "3 squared is 9."
    with fw.stream("POST", "/inference/v1/chat/completions", json={
        "model": job["outputModel"], "stream": True, "messages": [{"role": "user", "content": "2 squared?"}],
    }) as response:
        payloads = _sse_payloads(response.read().decode())
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == "[DONE]" and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["usage"]["total_tokens"] > 0 and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_fireworks_errors(fw: httpx.Client) -> None:
    acct = f"/v1/accounts/{FW_ACCOUNT}"
    unauthenticated = fw.get(f"{acct}/datasets", headers={"Authorization": "Bearer wrong"})
    _grpc_error(unauthenticated, 401, 16)
    _grpc_error(fw.get("/v1/accounts/not-mine/datasets"), 403, 7)
    inference = fw.post("/inference/v1/chat/completions", json={"model": "accounts/x/models/y",
                                                                "messages": [{"role": "user", "content": "q"}]})
    assert inference.status_code == 404
    assert inference.json()["error"]["object"] == "error" and inference.json()["error"]["message"]
    bad_key = fw.post("/inference/v1/embeddings", headers={"Authorization": "Bearer wrong"},
                      json={"model": "nomic-ai/nomic-embed-text-v1.5", "input": "x"})
    assert bad_key.status_code == 401 and set(bad_key.json()["error"]) >= {"object", "type", "message"}


def test_spec_is_the_pinned_one() -> None:
    """The copy in shared/specs is the one PROVIDERS.md §4 documents (openai/openai-openapi f85dbe2)."""
    digest = hashlib.sha256((SPECS / "openai-openapi.yaml").read_bytes()).hexdigest()
    assert digest == "db5d7478feae10b4d331834c60d9765a8aa042e38419f9b1694288c11aa8ebc8"
