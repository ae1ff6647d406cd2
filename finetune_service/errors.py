"""The domain error hierarchy and the one table that maps it to HTTP.

Services raise these; only `api/problems.py` turns them into responses, as RFC 9457
problem details on `/api/...` and OpenAI's error shape on `/v1/...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigurationError(Exception):
    """The operator's environment is wrong; raised at start, never for a request."""


class DomainError(Exception):
    """A failure the client can understand and act on. `detail` says what to fix."""

    def __init__(
        self, detail: str, *, errors: list[dict[str, Any]] | None = None, param: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.param = param


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    pass


class Forbidden(DomainError):
    pass


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class PayloadTooLarge(DomainError):
    pass


class UnsupportedMediaType(DomainError):
    pass


class ValidationFailed(DomainError):
    pass


class RateLimited(DomainError):
    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    pass


class ProviderError(DomainError):
    """A provider answered with an error. `status` is what we answer: the provider's own
    4xx where the client can fix it, 502 for outages, 504 for timeouts, 429 kept as 429."""

    def __init__(
        self,
        detail: str,
        *,
        provider: str,
        status: int = 502,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable


@dataclass(frozen=True)
class ErrorKind:
    status: int
    slug: str
    title: str
    openai_type: str


# The one mapping table. Order matters only for subclasses (most specific first).
ERROR_TABLE: list[tuple[type[DomainError], ErrorKind]] = [
    (BadRequest, ErrorKind(400, "bad-request", "Bad request", "invalid_request_error")),
    (Unauthorized, ErrorKind(401, "unauthorized", "Unauthorized", "authentication_error")),
    (Forbidden, ErrorKind(403, "forbidden", "Forbidden", "permission_error")),
    (NotFound, ErrorKind(404, "not-found", "Not found", "invalid_request_error")),
    (Conflict, ErrorKind(409, "conflict", "Conflict", "invalid_request_error")),
    (PayloadTooLarge, ErrorKind(413, "payload-too-large", "Payload too large", "invalid_request_error")),
    (UnsupportedMediaType, ErrorKind(415, "unsupported-media-type", "Unsupported media type",
                                     "invalid_request_error")),
    (ValidationFailed, ErrorKind(422, "validation-failed", "Validation failed", "invalid_request_error")),
    (RateLimited, ErrorKind(429, "rate-limited", "Too many requests", "rate_limit_error")),
    (ServiceUnavailable, ErrorKind(503, "service-unavailable", "Service unavailable", "server_error")),
    (ProviderError, ErrorKind(502, "provider-error", "Provider error", "provider_error")),
]


def kind_of(error: DomainError) -> ErrorKind:
    for cls, kind in ERROR_TABLE:
        if isinstance(error, cls):
            if isinstance(error, ProviderError) and error.status != kind.status:
                return ErrorKind(error.status, kind.slug, kind.title, kind.openai_type)
            return kind
    return ErrorKind(400, "bad-request", "Bad request", "invalid_request_error")


def retry_after_of(error: DomainError) -> float | None:
    return getattr(error, "retry_after", None)
