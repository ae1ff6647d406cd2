"""The Together emulator's responses, as the real SDK receives them, against Together's OpenAPI spec.

The real `together` SDK runs the whole fine-tuning flow against the emulator; an httpx event
hook captures every response, and each one is validated (Draft 2020-12) against the schema
the published spec gives for its path, method, status and content type. Where the SDK uses
endpoints the spec does not describe (PROVIDERS.md §4 "known gaps"), the mapping below says so.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from together import Together

from tests.emulators.server import serve_in_thread
from tests.emulators.together import TogetherEmulator, create_together_emulator

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs"
SPEC_URI = "urn:together-openapi"
KEY = "test-together-key"
MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
STEP = 0.02


def _openapi_30_to_json_schema(node: Any) -> Any:
    """The spec says OpenAPI 3.1 but still uses 3.0's `nullable: true`, which JSON Schema ignores.
    Rewrite it as "or null" so documented nulls (error.param, chunk finish_reason/usage) validate."""
    if isinstance(node, list):
        return [_openapi_30_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi_30_to_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with (SPECS / "together-openapi.yaml").open("rb") as handle:
        raw = yaml.load(handle, Loader=yaml.CSafeLoader)
    # Spec defect: TrainingMethodSFT.train_on_inputs is `oneOf: [boolean, "auto"]` *and* `type: boolean`,
    # so its own documented value "auto" (what the SDK sends and the API echoes) could never validate.
    schemas = raw["components"]["schemas"]
    del schemas["TrainingMethodSFT"]["properties"]["train_on_inputs"]["type"]
    # Spec defect: LRScheduler.lr_scheduler_args is `oneOf: [LinearLRSchedulerArgs, CosineLRSchedulerArgs]`,
    # but the linear schema (no required keys, extra keys allowed) also accepts every cosine value, so the
    # SDK's default `{"min_lr_ratio": 0.0, "num_cycles": 0.5}` matches both and fails "exactly one".
    # The intent is "either shape": anyOf.
    lr_args = schemas["LRScheduler"]["properties"]["lr_scheduler_args"]
    lr_args["anyOf"] = lr_args.pop("oneOf")
    converted: dict[str, Any] = _openapi_30_to_json_schema(raw)
    return converted


@pytest.fixture(scope="module")
def registry(spec: dict[str, Any]) -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class Captured:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes


# Responses the SDK flow gets from endpoints the spec lacks (PROVIDERS.md §4), and what we check
# instead. None = no JSON body to check.
SDK_ONLY: dict[tuple[str, str], str | None] = {
    # Step 1 of the SDK's upload: 302 + Location + X-Together-File-Id, empty body (spec only has
    # POST /files/upload, which the SDK does not use). Its 409 "already exists" body is ErrorData + file_id.
    ("POST", "/files"): "ErrorData",
    # Step 2: the presigned PUT, answered by the storage service, not the API.
    ("PUT", "/upload/{id}"): None,
    # Step 3: not in the spec; it answers a FileResponse.
    ("POST", "/files/{id}/preprocess"): "FileResponse",
}


def _spec_path(spec: dict[str, Any], method: str, path: str) -> str | None:
    """The spec's path template for a request path (`/v1` is the spec's server prefix)."""
    relative = path.removeprefix("/v1")
    candidates = [p for p, item in spec["paths"].items() if method.lower() in item]
    candidates.sort(key=lambda p: p.count("{"))  # literal paths before templated ones
    for template in candidates:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), relative):
            return template
    for method_, template in SDK_ONLY:
        if method_ == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), relative):
            return template
    return None


def _response_schema_ref(spec: dict[str, Any], method: str, template: str, status: int,
                         content_type: str) -> str | None:
    """A `$ref` to the documented schema, or None when the spec documents no body for it."""
    responses = spec["paths"][template][method.lower()]["responses"]
    documented = responses.get(str(status)) or {}
    for media in (documented.get("content") or {}):
        if content_type.startswith(media) and "schema" in documented["content"][media]:
            return f"{SPEC_URI}#/" + _pointer("paths", template, method.lower(), "responses", str(status),
                                               "content", media, "schema")
    if status >= 400:
        # Error statuses the spec leaves undocumented for this path: Together's generic error body
        # (`ErrorData`, PROVIDERS.md §5.1) applies to every endpoint.
        return f"{SPEC_URI}#/components/schemas/ErrorData"
    return None


def _sse_events(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.decode().split("\n\n"):
        data = "\n".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if data:
            events.append({"data": data if data == "[DONE]" else json.loads(data)})
    return events


def validate(spec: dict[str, Any], registry: Registry, item: Captured) -> str:
    """Validate one captured response; return the key of what was checked."""
    template = _spec_path(spec, item.method, item.path)
    assert template is not None, f"{item.method} {item.path} is neither in the spec nor a known SDK-only path"
    key = f"{item.method} {template} {item.status}"
    if (item.method, template) in SDK_ONLY:
        schema_name = SDK_ONLY[(item.method, template)]
        if schema_name is None or not item.body:
            return key
        ref = f"{SPEC_URI}#/components/schemas/{schema_name}"
    else:
        ref_or_none = _response_schema_ref(spec, item.method, template, item.status, item.content_type)
        if ref_or_none is None:
            assert not item.content_type.startswith("application/json"), f"{key}: JSON body but no schema"
            return key
        ref = ref_or_none
    validator = Draft202012Validator({"$ref": ref}, registry=registry)
    if item.content_type.startswith("text/event-stream"):
        documents: list[Any] = _sse_events(item.body)
        assert documents and documents[-1] == {"data": "[DONE]"}
    elif item.content_type.startswith("application/json"):
        documents = [json.loads(item.body)]
    else:  # e.g. file content as text/plain: the spec's schema is for the raw text
        documents = [item.body.decode()]
    for document in documents:
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        assert not errors, f"{key} does not match the spec:\n" + "\n".join(
            f"  at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors[:10]
        )
    return key


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TogetherEmulator, str]]:
    emulator = create_together_emulator(api_key=KEY, step_seconds=STEP)
    with serve_in_thread(emulator.app) as base_url:
        yield emulator, base_url


def _client(base_url: str, captured: list[Captured], key: str = KEY) -> Together:
    def capture(response: httpx.Response) -> None:
        response.read()
        captured.append(Captured(response.request.method, response.request.url.path, response.status_code,
                                 response.headers.get("content-type", ""), response.content))

    http = httpx.Client(event_hooks={"response": [capture]}, timeout=10)
    return Together(api_key=key, base_url=base_url, max_retries=0, http_client=http)


def _expect_error(call: Any, status: int) -> None:
    with pytest.raises(Exception) as info:
        call()
    assert getattr(info.value, "status_code", None) == status, repr(info.value)


def test_sdk_flow_matches_the_openapi_spec(
    served: tuple[TogetherEmulator, str], spec: dict[str, Any], registry: Registry, tmp_path: Path
) -> None:
    emulator, base_url = served
    captured: list[Captured] = []
    client = _client(base_url, captured)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in [("What is two plus two?", "Four."), ("Name a primary colour.", "Red.")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hi", "extra": 1}) + "\n")

    # Files: the 3-step upload, duplicate (409 -> retrieve), an invalid file, list, content, delete.
    uploaded = client.files.upload(train, purpose="fine-tune", check=False)
    assert client.files.upload(train, purpose="fine-tune", check=False).id == uploaded.id
    invalid = client.files.upload(bad, purpose="fine-tune", check=False)
    assert invalid.processing_status == "INVALID_FORMAT"
    assert uploaded.id in [f.id for f in client.files.list().data]
    assert client.files.content(uploaded.id).read() == train.read_bytes()
    assert client.files.delete(invalid.id).deleted is True
    _expect_error(lambda: client.files.retrieve(invalid.id), 404)

    # Catalog.
    assert MODEL in client.get("/v1/fine-tunes/models/supported", cast_to=object)["models"]  # type: ignore[index]
    _expect_error(lambda: client.fine_tuning.model_limits(model_name="acme/unknown"), 404)

    # Jobs: create (limits + estimate-price + create), poll to completion, events, checkpoints, metrics.
    job = client.fine_tuning.create(training_file=uploaded.id, model=MODEL, suffix="contract",
                                    train_on_inputs="auto", n_checkpoints=2)
    deadline = time.monotonic() + 5
    while client.fine_tuning.retrieve(job.id).status != "completed":
        assert time.monotonic() < deadline, "job did not complete"
        time.sleep(STEP)
    assert client.fine_tuning.list().data
    assert client.fine_tuning.list_events(job.id).data
    assert len(client.fine_tuning.list_checkpoints(job.id).data) == 2
    assert client.fine_tuning.list_metrics(job.id).metrics
    output_model = client.fine_tuning.retrieve(job.id).to_dict()["model_output_name"]

    # Cancel, then delete; unknown job ids.
    other = client.fine_tuning.create(training_file=uploaded.id, model=MODEL, train_on_inputs="auto")
    assert client.fine_tuning.cancel(other.id).status == "cancel_requested"
    client.fine_tuning.delete(other.id)
    _expect_error(lambda: client.fine_tuning.retrieve("ft-missing"), 404)
    _expect_error(lambda: client.fine_tuning.delete("ft-missing"), 404)

    # Inference: plain, streaming (usage on the last chunk), embeddings, unknown model.
    messages = [{"role": "user", "content": "what is two plus two"}]
    reply = client.chat.completions.create(model=str(output_model), messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Four."  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))  # type: ignore[arg-type]
    assert chunks[-1].usage is not None  # type: ignore[attr-defined]
    assert client.embeddings.create(model="BAAI/bge-base-en-v1.5", input="hello").data
    _expect_error(lambda: client.chat.completions.create(model="acme/none", messages=messages), 404)  # type: ignore[arg-type]

    # Error bodies: bad key, rate limit, server error.
    bad_key_client = _client(base_url, captured, key="wrong-key")
    _expect_error(lambda: bad_key_client.fine_tuning.list(), 401)
    emulator.faults.add("POST", r"/v1/chat/completions$", status=429, retry_after=1)
    _expect_error(lambda: client.chat.completions.create(model=MODEL, messages=messages), 429)  # type: ignore[arg-type]
    emulator.faults.add("POST", r"/v1/fine-tunes/estimate-price$", status=500)
    _expect_error(lambda: client.fine_tuning.create(training_file=uploaded.id, model=MODEL), 500)

    checked = {validate(spec, registry, item) for item in captured}
    expected = {
        "POST /files 302", "PUT /upload/{id} 200", "POST /files/{id}/preprocess 200", "POST /files 409",
        "GET /files 200", "GET /files/{id} 200", "GET /files/{id} 404", "GET /files/{id}/content 200",
        "DELETE /files/{id} 200",
        "GET /fine-tunes/models/supported 200", "GET /fine-tunes/models/limits 200",
        "GET /fine-tunes/models/limits 404", "POST /fine-tunes/estimate-price 200",
        "POST /fine-tunes/estimate-price 500", "POST /fine-tunes 200", "GET /fine-tunes 200",
        "GET /fine-tunes 401", "GET /fine-tunes/{id} 200", "GET /fine-tunes/{id} 404",
        "GET /fine-tunes/{id}/events 200", "GET /fine-tunes/{id}/checkpoints 200",
        "GET /fine-tunes/{id}/metrics 200", "POST /fine-tunes/{id}/cancel 200",
        "DELETE /fine-tunes/{id} 200", "DELETE /fine-tunes/{id} 404",
        "POST /chat/completions 200", "POST /chat/completions 404", "POST /chat/completions 429",
        "POST /embeddings 200",
    }
    assert expected <= checked, sorted(expected - checked)
    client.close()
    bad_key_client.close()


def test_validation_catches_a_response_that_breaks_the_spec(spec: dict[str, Any], registry: Registry) -> None:
    """The checker itself must be able to fail: a job without `status` is not a FinetuneResponse."""
    broken = Captured("GET", "/v1/fine-tunes/ft-1", 200, "application/json", b'{"id": "ft-1"}')
    with pytest.raises(AssertionError, match="does not match the spec"):
        validate(spec, registry, broken)
    unknown = Captured("GET", "/v1/not-an-endpoint", 200, "application/json", b"{}")
    with pytest.raises(AssertionError, match="neither in the spec"):
        validate(spec, registry, unknown)
