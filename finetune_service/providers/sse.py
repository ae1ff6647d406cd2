"""OpenAI-style chat completion streams (server-sent events) read straight from an HTTP body.

Read by every provider's stream opener (`providers/chat_streams.py`) rather than through an SDK's
typed chunk objects: the relay costs less per chunk than the SDK's models.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import msgspec

from finetune_service.errors import ProviderError
from finetune_service.providers.upstream_http import redact

DONE = b"[DONE]"
_LINE_ENDS = (b"\n", b"\r")


async def data_fields(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The value of every `data:` line of an SSE body, as bytes; comments and other fields are skipped.

    Works on the raw blocks as they arrive: a line split across two blocks is joined, and any of
    the SSE line endings (LF, CRLF, CR) ends a line.
    """
    pending = b""
    async for block in body:
        lines = (pending + block if pending else block).splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith(_LINE_ENDS) else b""
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


async def chat_chunks(body: AsyncIterable[bytes], provider: str, secret: str | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
    """The chunk objects of a streamed chat completion; an `error` event raises `ProviderError`,
    its message without `secret` (the API key the stream was opened with).

    The body is read to its end even after `[DONE]`: an HTTP client closes the connection of a
    response that is closed unread instead of reusing it, so every stream would pay a new connect.
    """
    async for data in data_fields(body):
        if data == DONE:
            continue
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise ProviderError(f"{provider} sent a malformed stream event", provider=provider, status=502,
                                retryable=True) from None
        if not isinstance(chunk, dict):
            continue
        error = chunk.get("error")
        if isinstance(error, dict):
            message = redact(str(error.get("message") or "stream error"), secret)
            raise ProviderError(f"{provider} error: {message}", provider=provider, status=502, retryable=True)
        yield chunk
