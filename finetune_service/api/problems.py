"""Turn every exception into a client-readable answer.

`/v1/...` answers in OpenAI's error shape so the openai SDK raises the right exception
class; everything else answers RFC 9457 problem details. Unexpected errors are logged
with the request id and answered without internals.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema
from litestar.types import ExceptionHandlersMap
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from finetune_service.errors import DomainError, kind_of, retry_after_of
from finetune_service.request_id import request_id_of

log = logging.getLogger("finetune_service.errors")

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER_SECONDS = 5
_OPENAI_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _is_openai_surface(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/v1/") or request.url.path == "/v1"


def error_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    param: str | None = None,
    openai_type: str | None = None,
    retry_after: float | None = None,
) -> Response[Any]:
    headers = {"X-Request-ID": request_id_of(request.scope)}
    if retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
    if _is_openai_surface(request):
        body: dict[str, Any] = {
            "error": {
                "message": detail,
                "type": openai_type or _OPENAI_TYPE_BY_STATUS.get(status, "server_error"),
                "param": param,
                "code": slug.replace("-", "_"),
            }
        }
        return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)
    problem: dict[str, Any] = {
        "type": f"https://finetune-service.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": headers["X-Request-ID"],
    }
    if errors:
        problem["errors"] = errors
    return Response(problem, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    kind = kind_of(exc)
    return error_response(
        request, status=kind.status, slug=kind.slug, title=kind.title, detail=exc.detail,
        errors=exc.errors, param=exc.param, openai_type=kind.openai_type, retry_after=retry_after_of(exc),
    )


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field = item.get("key") or item.get("source") or "body"
            errors.append({"field": str(field), "message": str(item.get("message", "is invalid"))})
    if errors:
        detail = "Invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    else:
        detail = f"Invalid request: {exc.detail}"
    return error_response(
        request, status=400, slug="invalid-request", title="Invalid request", detail=detail,
        errors=errors, param=errors[0]["field"] if errors else None,
    )


# Framework messages that do not say what to fix, with ones that do.
_HINTS = {
    "Invalid multipart/form-data": "The body must be multipart/form-data with the upload in a field named 'file' "
    "(e.g. curl -F file=@data.csv).",
}
_TITLES = {
    404: "Not found", 405: "Method not allowed", 413: "Payload too large", 415: "Unsupported media type",
}


def _body_limit(request: Request[Any, Any, Any]) -> int | None:
    try:
        return request.route_handler.resolve_request_max_body_size()
    except Exception:  # no route matched
        return None


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return _unexpected(request, exc)
    if exc.status_code == 400 and exc.detail == "Invalid UTF-8 encoded string":
        return _undecodable_json(request)
    detail = exc.detail
    if exc.status_code == 404 and detail in ("Not Found", ""):
        detail = f"No route for {request.method} {request.url.path}; see /schema for the API."
    elif exc.status_code == 413:
        limit = _body_limit(request)
        detail = (f"The request body is larger than the limit of {limit} bytes (FINETUNE_MAX_UPLOAD_BYTES); split "
                  "the file or ask the operator to raise the limit." if limit else f"Request body too large: {detail}")
    detail = _HINTS.get(detail, detail)
    title = _TITLES.get(exc.status_code, "Bad request")
    return error_response(
        request, status=exc.status_code, slug=title.lower().replace(" ", "-"), title=title, detail=detail,
        retry_after=None,
    )


def _undecodable(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Any]:
    # Litestar decodes multipart fields sent without a filename (and form bodies) as UTF-8; raw bytes
    # there are the client's mistake, not ours.
    return error_response(
        request, status=400, slug="invalid-encoding", title="Invalid encoding",
        detail=f"The request has text that is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at position "
        f"{exc.start}). Send text as UTF-8, and a file as a multipart file part with a filename "
        "(e.g. curl -F file=@data.csv).",
    )


def _undecodable_json(request: Request[Any, Any, Any]) -> Response[Any]:
    """msgspec (>= 0.23) reports bad UTF-8 in a JSON body itself, without saying where; the body
    Litestar already read says where, so the answer is the same as for any other undecodable text."""
    body = ScopeState.from_scope(request.scope).body
    try:
        (body if isinstance(body, bytes) else b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        return _undecodable(request, exc)
    return error_response(request, status=400, slug="invalid-encoding", title="Invalid encoding",
                          detail="The request has text that is not valid UTF-8. Send text as UTF-8.")


def _database_down(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("database unavailable during %s %s [request_id=%s]: %s", request.method, request.url.path,
                request_id_of(request.scope), type(exc).__name__)
    return error_response(
        request, status=503, slug="service-unavailable", title="Service unavailable",
        detail="The database is not reachable right now; retry shortly.", openai_type="server_error",
        retry_after=DATABASE_RETRY_AFTER_SECONDS,
    )


def _database_rejected(request: Request[Any, Any, Any], exc: DBAPIError | asyncpg.DataError) -> Response[Any]:
    """PostgreSQL refuses some values SQLite stores (SQLSTATE class 22, "data exception"): a NUL
    character in any text, a string longer than its column. That is the value sent, not a fault.
    Through SQLAlchemy the driver's error is `exc.orig`; the polling reads raise asyncpg's own."""
    driver_error = exc.orig if isinstance(exc, DBAPIError) else exc
    state = str(getattr(driver_error, "sqlstate", None) or "")
    if state == "22021":
        return error_response(
            request, status=400, slug="invalid-request", title="Invalid request",
            detail="The request has text with a NUL (\\u0000) character, which cannot be stored or looked up; "
            "remove it.",
        )
    if state.startswith("22"):
        reason = (str(getattr(driver_error, "args", [""])[0] or "").splitlines() or [""])[0][:200]
        return error_response(
            request, status=422, slug="validation-failed", title="Validation failed",
            detail=f"A value in the request cannot be stored: {reason or 'invalid value'}; shorten or fix it.",
        )
    return _unexpected(request, exc)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    request_id = request_id_of(request.scope)
    log.error("unexpected error handling %s %s [request_id=%s]", request.method, request.url.path,
              request_id, exc_info=exc)
    return error_response(
        request, status=500, slug="internal-error", title="Internal server error",
        detail=f"The service hit an unexpected error. Report request id {request_id} to the operator.",
        openai_type="server_error",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: _domain,
    # Lost connections and refused connects (OperationalError/InterfaceError wrap the driver's);
    # a bad statement is a DBAPIError too, but a ProgrammingError stays a 500.
    OperationalError: _database_down,
    InterfaceError: _database_down,
    # A refused connect surfaces from the pool unwrapped.
    ConnectionRefusedError: _database_down,
    # The polling reads' own SQLite connection: an unopenable file, or a lock held past its timeout.
    sqlite3.OperationalError: _database_down,
    asyncpg.PostgresConnectionError: _database_down,
    DBAPIError: _database_rejected,
    asyncpg.DataError: _database_rejected,
    ValidationException: _validation,
    HTTPException: _http,
    UnicodeDecodeError: _undecodable,
    Exception: _unexpected,
}


# --- OpenAPI: document the error answers the handlers above really give -----------------------
# Litestar documents a 400 as `application/json {status_code, detail, extra}`; every error here is
# a problem document (`/api/...`) or OpenAI's error shape (`/v1/...`), whatever the status.
_STRING = Schema(type=OpenAPIType.STRING)
_NULLABLE_STRING = Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL])
PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "title", "status", "detail", "instance", "request_id"],
    properties={
        "type": _STRING, "title": _STRING, "status": Schema(type=OpenAPIType.INTEGER), "detail": _STRING,
        "instance": _STRING, "request_id": _STRING,
        "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(
            type=OpenAPIType.OBJECT, required=["message"],
            properties={"field": _NULLABLE_STRING, "message": _STRING},
        )),
    },
    description="RFC 9457 problem details; `detail` says what to fix.",
)
OPENAI_ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={"error": Schema(
        type=OpenAPIType.OBJECT, required=["message", "type", "param", "code"],
        properties={"message": _STRING, "type": _STRING, "param": _NULLABLE_STRING, "code": _NULLABLE_STRING},
    )},
    description="OpenAI's error shape.",
)


def document_error_responses(openapi: OpenAPI) -> OpenAPI:
    """Replace Litestar's default 400 with the error shapes we answer, for every 4xx and 5xx."""
    components = openapi.components
    components.schemas = {**(components.schemas or {}), "ProblemDetails": PROBLEM_SCHEMA,
                          "OpenAIError": OPENAI_ERROR_SCHEMA}
    problem = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ProblemDetails"))
    openai_error = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/OpenAIError"))
    for path, item in (openapi.paths or {}).items():
        openai_surface = path.startswith("/v1/") or path == "/v1"
        content = {MediaType.JSON.value: openai_error} if openai_surface else {PROBLEM_JSON: problem}
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = dict(operation.responses or {})
            for code in [c for c in responses if c[:1] in {"4", "5"}]:
                del responses[code]
            responses["4XX"] = OpenAPIResponse(description="The request cannot be served as sent; "
                                               "the body says what to fix.", content=content)
            responses["5XX"] = OpenAPIResponse(description="The service or a provider failed; retry later.",
                                               content=content)
            operation.responses = responses
    return openapi
