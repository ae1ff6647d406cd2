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


def _headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": "no-cache"}


def not_modified(request: Request[Any, Any, Any], etag: str) -> Response[Any] | None:
    """The 304 to send when the client already has `etag`; lets a handler stop before building a body."""
    return Response(content=None, status_code=304, headers=_headers(etag)) if _matches(request, etag) else None


def conditional(request: Request[Any, Any, Any], etag: str, body: T) -> Response[T | None]:
    return not_modified(request, etag) or Response(content=body, headers=_headers(etag))
