"""What every streamed (SSE) response shares."""

from __future__ import annotations

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# Route option that turns response compression off (see CompressionConfig in app.py). Streams are
# a few hundred bytes per write: gzip has nothing to gain there but still costs a compress and a
# flush per write, and held back time to first token (0.2-0.5 ms of CPU per streamed completion).
NO_COMPRESSION = "no_compression"
STREAMED = {NO_COMPRESSION: True}
