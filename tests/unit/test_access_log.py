from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from finetune_service.access_log import AccessLog, log
from tests.service_process import service

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/v1/models", "raw_path": b"/v1/models",
                         "query_string": b"x=1",
                         "root_path": "", "http_version": "1.1", "client": ("127.0.0.1", 5000), "headers": []}


class Recorder(logging.Handler):
    def __init__(self, happened: list[str]) -> None:
        super().__init__()
        self.happened = happened

    def emit(self, record: logging.LogRecord) -> None:
        self.happened.append(f"logged {record.getMessage()}")


@pytest.fixture
def happened() -> Any:
    events: list[str] = []
    handler = Recorder(events)
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    yield events
    log.removeHandler(handler)
    log.setLevel(level)


async def test_the_line_is_written_after_the_last_byte_went_out(happened: list[str]) -> None:
    async def streamed(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        happened.append(f"sent {message['type']}")

    await AccessLog(streamed)(dict(SCOPE), None, send)  # type: ignore[arg-type]
    assert happened == ["sent http.response.start", "sent http.response.body", "sent http.response.body",
                        'logged 127.0.0.1:5000 - "GET /v1/models?x=1 HTTP/1.1" 200']


async def test_no_response_no_line_and_other_scopes_pass_through(happened: list[str]) -> None:
    calls: list[str] = []

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        if scope["type"] == "http":
            raise RuntimeError("crashed before answering")

    with pytest.raises(RuntimeError):
        await AccessLog(failing)(dict(SCOPE), None, None)  # type: ignore[arg-type]
    await AccessLog(failing)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert calls == ["http", "lifespan"] and happened == []


def test_serve_writes_one_line_per_request_in_uvicorns_format(tmp_path: Path) -> None:
    with service(tmp_path, stdout=subprocess.PIPE) as (url, process):
        assert httpx.get(f"{url}/no-such-page").status_code == 404  # Litestar's middleware never sees these
        assert httpx.delete(f"{url}/health").status_code == 405
        process.terminate()
        output, _ = process.communicate(timeout=20)
    # Without the client's port, which changes with every request.
    lines = [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1", line) for line in output.decode().splitlines()
             if "HTTP/1.1" in line]
    assert lines[-2:] == ['INFO:     127.0.0.1 - "GET /no-such-page HTTP/1.1" 404 Not Found',
                          'INFO:     127.0.0.1 - "DELETE /health HTTP/1.1" 405 Method Not Allowed']
    assert set(lines[:-2]) == {'INFO:     127.0.0.1 - "GET /health HTTP/1.1" 200 OK'}  # the start-up polls
    assert output.decode().count("/no-such-page") == 1  # uvicorn's own line is off
