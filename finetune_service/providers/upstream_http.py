"""What every provider adapter reads off a failed HTTP answer, and how long it waits before a retry."""

from __future__ import annotations

import contextlib
import email.utils
import json
import random
import time
from collections.abc import Mapping


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, `retry-after` (seconds or an HTTP
    date), or Together's `x-ratelimit-reset`; None when it said nothing usable."""
    with contextlib.suppress(KeyError, ValueError):
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    value = headers.get("retry-after")
    if value:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    with contextlib.suppress(KeyError, ValueError):
        return max(0.0, float(headers["x-ratelimit-reset"]))
    return None


def error_message(raw: bytes, fallback: str) -> str:
    """The human part of an error body: `{"error": {"message"}}`, `{"error": "..."}` or
    `{"message"}`; otherwise the start of the body, or `fallback` (the reason phrase) when empty."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace") or fallback
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return json.dumps(body)[:500]


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` (an API key a provider may echo back in a message)."""
    return text.replace(secret, "[redacted]") if secret else text


def backoff_delay(
    attempt: int, asked: float | None, *, base: float = 0.5, cap: float = 20.0, max_asked: float = 60.0,
) -> float:
    """Seconds before retry number `attempt + 1`: what the provider asked for (at most `max_asked`),
    else a full-jitter exponential backoff, so clients that failed together do not retry together."""
    if asked is not None:
        return min(asked, max_asked)
    return random.uniform(0, min(cap, base * 2**attempt))
