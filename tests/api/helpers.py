"""Small helpers the API tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
