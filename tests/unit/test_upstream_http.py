from __future__ import annotations

import email.utils
import time

import pytest

from finetune_service.providers.upstream_http import backoff_delay, error_message, retry_after


def test_retry_after_reads_every_form_providers_send() -> None:
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "-3"}) == 0.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert retry_after({"retry-after": in_a_minute}) == pytest.approx(60, abs=2)
    assert retry_after({"x-ratelimit-reset": "12"}) == 12.0
    assert retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "whenever"}) is None
    assert retry_after({}) is None


def test_error_message_finds_the_human_part() -> None:
    assert error_message(b'{"error": {"message": "model not found", "type": "x"}}', "Not Found") == "model not found"
    assert error_message(b'{"error": "quota exceeded"}', "") == "quota exceeded"
    assert error_message(b'{"message": "bad field"}', "") == "bad field"
    assert error_message(b'{"detail": [1]}', "") == '{"detail": [1]}'
    assert error_message(b"upstream connect error", "Bad Gateway") == "upstream connect error"
    assert error_message(b"", "Service Unavailable") == "Service Unavailable"
    assert len(error_message(b"x" * 2000, "")) == 500


def test_backoff_honours_what_was_asked_up_to_a_cap_and_jitters_otherwise() -> None:
    assert backoff_delay(0, 3.0) == 3.0
    assert backoff_delay(0, 600.0) == 60.0
    assert backoff_delay(0, 600.0, max_asked=5.0) == 5.0
    delays = [backoff_delay(3, None, base=0.5, cap=20.0) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100
    assert all(backoff_delay(10, None, cap=8.0) <= 8.0 for _ in range(50))
