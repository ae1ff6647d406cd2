"""JSON answers are gzipped for clients that accept it; streams never are (each write is small and
a compressor would add a flush per event and hold back the first token)."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.api.helpers import uploaded_id
from tests.api.test_completions import CHAT, chat, sse_events
from tests.api.test_jobs import JOBS, job_body
from tests.conftest import AUTH_A

GZIP = {**AUTH_A, "Accept-Encoding": "gzip"}


async def test_large_json_is_gzipped(client: AsyncTestClient[Litestar]) -> None:
    dataset = await uploaded_id(client)
    for i in range(3):
        await client.post(JOBS, json=job_body(dataset, name=f"j{i}"), headers=AUTH_A)
    listing = await client.get(JOBS, headers=GZIP)
    assert listing.headers["content-encoding"] == "gzip" and listing.json()["total"] == 3


async def test_streams_are_not_compressed(client: AsyncTestClient[Litestar]) -> None:
    # Long enough that the stream is well over the 1 KiB compression threshold.
    response = await client.post(CHAT, json=chat("tell me a long story " * 40, stream=True), headers=GZIP)
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert len(response.content) > 1024 and response.content.startswith(b"data: ")
    assert sse_events(response.text)[-1] == "[DONE]"
