"""Streamed chat completions opened with one aiohttp request, for providers that relay the raw stream.

A relayed stream is the one call where the SDK's request machinery outweighed the work: opening
it with the openai SDK's `post` (even over its aiohttp transport) made a relayed completion's first
token 1.2 ms later than one aiohttp request does, in a relay that adds 3.5 ms in all
(`benchmarks/bench_streaming.py`, 2026-12-03). The stream is read as raw SSE either way
(`providers/sse.py`). Everything else the adapters do still goes through their SDKs.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from finetune_service.errors import ProviderError
from finetune_service.providers.sse import chat_chunks
from finetune_service.providers.upstream_http import backoff_delay, error_message, redact, retry_after

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

# Turns a failed answer (status, message, Retry-After seconds) into the provider's `ProviderError`.
StatusMapper = Callable[[int, str, float | None], ProviderError]
# Seconds to wait before retry number `attempt + 1`, given what the provider asked for.
RetryDelay = Callable[[int, float | None], float]


def environment_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as the SDKs' clients honour them. Looked up
    once: aiohttp's `trust_env` looks it up on every request, which cost 1.7 ms of CPU per stream."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class ChatStreamOpener:
    """POSTs a streamed chat completion and hands back its chunks; one keep-alive session per opener.

    The API key is sent as a bearer token and removed from every error message the provider sends.
    Opening retries what the provider marks retryable (connection failures, timeouts, 429, 5xx)
    with backoff, honouring Retry-After, like the SDKs do; a failure after the stream started is
    not retried (its chunks may have been relayed already) but raised as a `ProviderError`.
    """

    def __init__(
        self, *, provider: str, url: str, api_key: str, timeout: float, max_retries: int,
        map_status: StatusMapper, delay: RetryDelay = backoff_delay,
    ) -> None:
        self._provider = provider
        self._url = url
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                         "Accept": "text/event-stream"}
        # No limit on the whole stream, only on connecting and on the silence between two reads.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0), sock_read=timeout)
        self._max_retries = max_retries
        self._map_status = map_status
        self._delay = delay
        self._proxy = environment_proxy(url)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Sends `body` (a complete upstream request); every failure to open raises here."""
        content = _encoder.encode(body)
        attempt = 0
        while True:
            error: ProviderError
            try:
                response = await self._client().post(self._url, data=content, headers=self._headers,
                                                      proxy=self._proxy)
            except TimeoutError:
                error = ProviderError(f"{self._provider} did not answer in time", provider=self._provider,
                                      status=504, retryable=True)
            except aiohttp.ClientError:
                error = ProviderError(f"Could not reach {self._provider}", provider=self._provider, status=502,
                                      retryable=True)
            else:
                if response.status < 400:
                    return self._chunks(response)
                try:
                    raw = await response.read()
                finally:
                    response.release()
                message = redact(error_message(raw, response.reason or ""), self._api_key)
                error = self._map_status(response.status, message, retry_after(response.headers))
            if not error.retryable or attempt >= self._max_retries:
                raise error
            delay = self._delay(attempt, error.retry_after)
            attempt += 1
            log.info("%s stream failed to open (%s); retry %d in %.3fs", self._provider, error.status, attempt, delay)
            await asyncio.sleep(delay)

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        finished = False
        try:
            async for chunk in chat_chunks(response.content.iter_any(), self._provider, self._api_key):
                yield chunk
            finished = True
        except (aiohttp.ClientError, TimeoutError):
            raise ProviderError(f"{self._provider} stream was interrupted", provider=self._provider, status=502,
                                retryable=True) from None
        finally:
            # Read to its end, the connection goes back to the pool; a stream left midway cannot be reused.
            if finished:
                response.release()
            else:
                response.close()
