"""Small helpers the API tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import AUTH_A, REPO

SAMPLE = REPO / "sample_data"


async def upload(
    client: AsyncTestClient[Litestar], path: Path | str = SAMPLE / "support_qa.csv", *,
    headers: dict[str, str] = AUTH_A, content: bytes | None = None, filename: str | None = None,
) -> Any:
    path = Path(path)
    data = content if content is not None else path.read_bytes()
    return await client.post(
        "/api/finetune/upload-dataset", files={"file": (filename or path.name, data, "application/octet-stream")},
        headers=headers,
    )


async def uploaded_id(client: AsyncTestClient[Litestar], **kwargs: Any) -> str:
    response = await upload(client, **kwargs)
    assert response.status_code == 201, response.text
    return str(response.json()["path"])


async def eventually(get: Callable[[], Awaitable[Response]], ok: Callable[[Response], bool],
                     seconds: float = 5.0) -> Response:
    """The first answer `ok` accepts, asking again until `seconds` have passed. For a change made by
    another process: on PostgreSQL each process learns of it from a notification that arrives a
    moment after the commit."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        answer = await get()
        if ok(answer) or asyncio.get_running_loop().time() >= deadline:
            return answer
        await asyncio.sleep(0.01)
