"""Helpers for the retrieval tests (no tests here): small files of every type, a loopback web site, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import AUTH_A
from tests.emulators.server import answer_lifespan

Client = AsyncTestClient[Litestar]


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page (correct xref offsets)."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font_id = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode())
        objects.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


async def upload_file(client: Client, name: str, content: bytes, *, headers: dict[str, str] = AUTH_A,
                      **fields: str) -> Any:
    return await client.post("/api/retrieval/files", files={"file": (name, content, "application/octet-stream")},
                             data=fields or None, headers=headers)


async def wait_ready(client: Client, folder_id: str, document_id: str, *, headers: dict[str, str] = AUTH_A,
                     wait_seconds: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + wait_seconds
    while True:
        response = await client.get(f"/api/retrieval/folders/{folder_id}/documents/{document_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("ready", "failed"):
            return body
        assert time.monotonic() < deadline, f"document still {body['status']}"
        await asyncio.sleep(0.05)


async def add_ready(client: Client, name: str, content: bytes, *, headers: dict[str, str] = AUTH_A,
                    **fields: str) -> tuple[str, str, dict[str, Any]]:
    """Upload, wait for indexing; (folder id, document id, document status)."""
    response = await upload_file(client, name, content, headers=headers, **fields)
    assert response.status_code == 200, response.text
    body = response.json()
    folder_id, document_id = body["folder"]["apiFolderId"], body["document"]["id"]
    status = await wait_ready(client, folder_id, document_id, headers=headers)
    assert status["status"] == "ready", status
    return folder_id, document_id, status


async def search(client: Client, folder_id: str, query: str, *, headers: dict[str, str] = AUTH_A,
                 **extra: Any) -> Any:
    return await client.post("/api/retrieval/similar-sentences",
                             json={"query": query, "api_folder_id": folder_id, **extra}, headers=headers)


Handler = Callable[[str], Awaitable[tuple[int, dict[str, str], bytes]] | tuple[int, dict[str, str], bytes]]


class LoopbackSite:
    """A tiny ASGI web site: `pages` maps a path to (status, headers, body); `hits` records paths asked for."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.pages = pages
        self.hits: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        path = scope["path"]
        self.hits.append(path)
        status, headers, body = self.pages.get(path, (404, {"content-type": "text/plain"}, b"not found"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})


def html(body: str, title: str = "Page") -> tuple[int, dict[str, str], bytes]:
    return 200, {"content-type": "text/html; charset=utf-8"}, (
        f"<html><head><title>{title}</title><style>p {{color: red}}</style></head><body>{body}"
        "<script>var secret = 'do not index';</script></body></html>").encode()
