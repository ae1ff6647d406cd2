"""Request parameters several controllers declare the same way."""

from __future__ import annotations

from typing import Annotated

from litestar.params import HeaderParameter

# Retrying a create with the same key returns the first result instead of starting a second paid job.
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=255)]
