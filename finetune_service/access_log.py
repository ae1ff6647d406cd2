"""uvicorn's access-log line, written once the response has gone out instead of before it.

uvicorn formats and writes its line when a response starts, before the first byte leaves: about
0.2 ms on every request's critical path (a streamed completion's first token included). `serve`
runs uvicorn with `uvicorn_log_config()`, which gives uvicorn's access logger no handler (so
uvicorn writes nothing) and this module's logger uvicorn's access handler and format, and wraps the
app in `AccessLog`, which writes the same line after the app returns. It wraps the whole app
because Litestar's middleware never sees a 404 or 405.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

log = logging.getLogger(__name__)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging, with its access line moved from uvicorn's logger to ours."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][__name__] = config["loggers"]["uvicorn.access"]
    config["loggers"]["uvicorn.access"] = {"handlers": [], "propagate": False}
    return config


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if status is not None:  # like uvicorn: a request that never got a response has no line
                http: Any = scope  # an HTTP scope, typed by uvicorn and Litestar alike
                log.info('%s - "%s %s HTTP/%s" %d', get_client_addr(http), http["method"],
                         get_path_with_query_string(http), http["http_version"], status)
