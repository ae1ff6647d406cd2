"""Schema fuzzing: schemathesis against the service's own OpenAPI document, every operation.

A short, deterministic smoke run (SQLite only): the service runs on a loopback port (uvicorn in
a thread), every operation of `/schema/openapi.json` gets a few generated requests (valid and
invalid ones) with a valid API key, and each answer must not be a 5xx and, where the schema
describes the status, must match its documented content type, headers and body schema.

Outbound network is blocked for the whole module (name resolution and connects to anything
but loopback fail), so operations that fetch user-supplied URLs are fuzzed too without sending
a packet anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from finetune_service.app import create_app
from finetune_service.settings import Settings
from tests.conftest import AUTH_A, KEY_A, KEY_B, REPO
from tests.emulators.server import serve_in_thread

# Generated requests per operation (per generation mode). 85 operations x this stays well under
# a minute on the 2-core machine; raise it locally for a deeper run.
MAX_EXAMPLES = 25

# The routes do not depend on settings, so the schema can be read at collection time; the test
# also checks that the running service serves exactly this document.
with tempfile.TemporaryDirectory() as _scratch:
    RAW_SCHEMA: dict[str, Any] = create_app(Settings(data_dir=Path(_scratch))).openapi_schema.to_schema()

schema = (
    schemathesis.openapi.from_dict(RAW_SCHEMA)
    # Server-Sent Events until the job finishes: a response that may never end is not a case
    # for a request/response fuzzer (covered by tests/api/test_jobs.py).
    .exclude(method="GET", path="/api/finetune/jobs/{job_id}/stream")
)

# create_app documents the error shapes it really answers (problem details on /api, OpenAI's
# error object on /v1), so error answers are checked against the schema like successes.
CHECKS = [not_a_server_error, response_headers_conformance, response_schema_conformance, content_type_conformance]


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str | bytes):
        return False
    name = host.decode() if isinstance(host, bytes) else host
    if name.lower() in {"localhost", "localhost.", "testserver"}:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def no_outbound_network() -> Iterator[None]:
    """URL-fetching operations get generated URLs; nothing may leave the machine."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, "outbound network is disabled in the fuzz test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise ConnectionRefusedError("outbound network is disabled in the fuzz test")
        real_connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        yield


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory, no_outbound_network: None) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    settings = Settings(
        data_dir=data_dir, api_keys={KEY_A: "tenant-a", KEY_B: "tenant-b"}, sandbox_step_seconds=0.05,
        sync_interval_seconds=0, rate_limit_per_second=0, max_upload_bytes=2 * 1024 * 1024,
    )
    with serve_in_thread(create_app(settings)) as url:
        served = requests.get(f"{url}/schema/openapi.json", timeout=10).json()
        assert served == RAW_SCHEMA
        _seed(url)
        yield url


def _seed(url: str) -> None:
    """Some records, so list operations answer with full bodies for the schema checks."""
    with (REPO / "sample_data" / "support_qa.csv").open("rb") as handle:
        upload = requests.post(f"{url}/api/finetune/upload-dataset", headers=AUTH_A,
                               files={"file": ("support_qa.csv", handle)}, timeout=30)
    assert upload.status_code == 201, upload.text
    dataset = upload.json()["path"]
    project = requests.post(f"{url}/api/finetune/projects", headers=AUTH_A, json={"name": "fuzz"}, timeout=10)
    assert project.status_code == 201, project.text
    job = requests.post(f"{url}/api/finetune/jobs", headers=AUTH_A, timeout=30, json={
        "name": "fuzz", "provider": "SANDBOX", "model_name": "sandbox-chat-small", "dataset_path": dataset})
    assert job.status_code == 201, job.text


@pytest.fixture(scope="module")
def session(service_url: str) -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
    # No shrinking: a failure is reported with the example as generated, which keeps the run bounded.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_operation(case: schemathesis.Case, service_url: str, session: requests.Session) -> None:
    case.call_and_validate(base_url=service_url, session=session, headers={"Authorization": f"Bearer {KEY_A}"},
                           checks=CHECKS, timeout=30)
