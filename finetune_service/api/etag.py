"""Weak ETags so dashboards can poll with If-None-Match and get 304s."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, TypeVar

from litestar import Request, Response

T = TypeVar("T")


def etag_of(parts: Iterable[object]) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def _matches(request: Request[Any, Any, Any], etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    candidates = {c.strip() for c in header.split(",")}
    return "*" in candidates or etag in candidates or etag.removeprefix("W/") in candidates


def conditional(request: Request[Any, Any, Any], etag: str, body: T) -> Response[T | None]:
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request, etag):
        return Response(content=None, status_code=304, headers=headers)
    return Response(content=body, headers=headers)
