"""Refuse the requests a web page can make without a CORS preflight.

A browser sends a cross-site POST with `text/plain`, a form encoding or multipart without
asking first. No route of ours takes `text/plain`, so it is refused (415); and while the
service runs without API keys (loopback-only, no auth), a request carrying another site's
`Origin` is refused (403), so a page the operator visits cannot drive the local service.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.datastructures import Headers
from litestar.types import ASGIApp, Receive, Scope, Send

from finetune_service.errors import Forbidden, UnsupportedMediaType

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _same_origin(origin: str, host: str | None) -> bool:
    return bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()


def request_guard_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in _WRITES:
            headers = Headers.from_scope(scope)
            if headers.get("content-type", "").split(";", 1)[0].strip().lower() == "text/plain":
                raise UnsupportedMediaType(
                    "This route takes application/json (or multipart/form-data for uploads), not text/plain.",
                    param="Content-Type",
                )
            origin = headers.get("origin")
            if origin and scope["app"].state.services.key_store.open_mode and not _same_origin(
                origin, headers.get("host")
            ):
                raise Forbidden(
                    f"Cross-site request from {origin} refused: this service runs without API keys, so only "
                    "same-origin pages and non-browser clients may change data. Configure API keys to open it up.",
                    param="Origin",
                )
        await app(scope, receive, send)

    return middleware
