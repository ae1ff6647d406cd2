"""Liveness and readiness probes (no auth, never cached)."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.datastructures import State

from finetune_service.container import Services
from finetune_service.errors import ServiceUnavailable


class Health(msgspec.Struct):
    status: str


@get("/health", tags=["health"], summary="Liveness", cache_control=None)
async def health() -> Health:
    return Health(status="ok")


@get("/ready", tags=["health"], summary="Readiness: the database answers")
async def ready(state: State) -> Health:
    services: Services = state.services
    try:
        await services.database.ping()
    except Exception as exc:
        raise ServiceUnavailable(
            f"The database is not reachable ({type(exc).__name__}); check FINETUNE_DATABASE_URL."
        ) from None
    return Health(status="ready")
