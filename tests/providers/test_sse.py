"""Reading OpenAI-style chat streams straight from HTTP body bytes (`providers/sse.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from finetune_service.errors import ProviderError
from finetune_service.providers.sse import chat_chunks, data_fields


class Body:
    """An HTTP body delivered in the given blocks; records how far it was read."""

    def __init__(self, *blocks: bytes) -> None:
        self.blocks = blocks
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for block in self.blocks:
            self.read += 1
            yield block


async def test_data_fields_joins_lines_split_across_blocks_and_accepts_every_line_ending() -> None:
    body = Body(b": keep-alive\n\ndata: {\"a\"", b": 1}\r\n\r\nevent: x\rdata:[DONE]\r", b"\ndata: tail")
    assert [d async for d in data_fields(body)] == [b'{"a": 1}', b"[DONE]", b"tail"]


async def test_chat_chunks_reads_the_body_to_its_end_after_done() -> None:
    body = Body(b'data: {"id": "c", "choices": []}\n\ndata: [DONE]\n\n', b"", b"")
    assert [c async for c in chat_chunks(body, "Upstream")] == [{"id": "c", "choices": []}]
    assert body.read == 3


async def test_chat_chunks_raises_on_error_events_and_malformed_data() -> None:
    failed = Body(b'data: {"choices": []}\n\ndata: {"error": {"message": "overloaded"}}\n\n')
    with pytest.raises(ProviderError) as caught:
        [c async for c in chat_chunks(failed, "Upstream")]
    assert (caught.value.detail, caught.value.status, caught.value.retryable) == ("Upstream error: overloaded", 502,
                                                                                  True)
    with pytest.raises(ProviderError) as caught:
        [c async for c in chat_chunks(Body(b"data: {not json\n\n"), "Upstream")]
    assert caught.value.detail == "Upstream sent a malformed stream event" and caught.value.status == 502
