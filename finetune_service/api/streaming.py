"""What every streamed (SSE) response shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar.background_tasks import BackgroundTask
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# Route option that turns response compression off (see CompressionConfig in app.py). Streams are
# a few hundred bytes per write: gzip has nothing to gain there but still costs a compress and a
# flush per write, and held back time to first token (0.2-0.5 ms of CPU per streamed completion).
NO_COMPRESSION = "no_compression"
STREAMED = {NO_COMPRESSION: True}


class _StreamUntilDisconnect(ASGIStreamingResponse):
    """Litestar's streaming response, watching for the client leaving with one asyncio task instead
    of an anyio task group: the group cost 0.15 ms of CPU per response (this, 0.025 ms), most of it
    before the first event went out."""

    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                continue
            left = True
            streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            # Our own cancel ends the response as the client left it; any other one goes on.
            if not left or streaming.uncancel():
                raise
        finally:
            watcher.cancel()


class EventStream(Stream):
    """Server-sent events, uncompressed (route them with `opt=STREAMED`); `close` runs after the
    response ends, however it ends (the client leaving included)."""

    def __init__(self, events: AsyncIterator[bytes], close: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS, background=BackgroundTask(close))

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        # Same fields (no slots of its own), another send_body: Litestar has no hook to pick the class.
        response.__class__ = _StreamUntilDisconnect
        return response
