"""Per-tenant request rate limit: a token bucket per tenant, 429 with Retry-After when empty.

Buckets live in the process, so with several replicas each enforces the limit on its own
share of the traffic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from finetune_service.errors import RateLimited


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    capacity: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self, now: float) -> float:
        """0 when a request may go ahead, else the seconds until one token is back."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class TenantRateLimiter:
    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def wait_for(self, tenant_id: str) -> float:
        bucket = self.buckets.get(tenant_id)
        if bucket is None:
            bucket = self.buckets[tenant_id] = TokenBucket(self.rate, self.burst)
        return bucket.take(time.monotonic())


def rate_limit_middleware(app: ASGIApp) -> ASGIApp:
    """Runs after authentication (needs `scope["user"]`); off when the rate is 0."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        limiter: TenantRateLimiter | None = scope["app"].state.services.rate_limiter
        principal: Any = scope.get("user")
        if scope["type"] != "http" or limiter is None or principal is None:
            await app(scope, receive, send)
            return
        wait = limiter.wait_for(principal.tenant_id)
        if wait > 0:
            raise RateLimited(
                f"This API key's tenant is over {limiter.rate:g} requests per second; retry after "
                f"{math.ceil(wait)} s or ask the operator to raise FINETUNE_RATE_LIMIT.", retry_after=wait,
            )
        await app(scope, receive, send)

    return middleware
