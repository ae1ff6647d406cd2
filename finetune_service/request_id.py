"""A request id on every request and response, so a log line can be matched to a call."""

from __future__ import annotations

import re
import secrets
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY = "request_id"


def request_id_of(scope: Any) -> str:
    """The request's id; requests that never reached the middleware (no route) get one here."""
    state = scope.setdefault("state", {})
    if _KEY not in state:
        state[_KEY] = secrets.token_hex(8)
    return str(state[_KEY])


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})[_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware
