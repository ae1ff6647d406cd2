"""create_app(settings) -> Litestar: routes, dependencies, lifespan and error handling."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.logging import LoggingConfig
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from dataset_formats.memory_pool import use_bulk_memory_pool
from finetune_service import __version__
from finetune_service.access_log import AccessLog
from finetune_service.api.catalog import CatalogController
from finetune_service.api.datasets import DatasetsController
from finetune_service.api.deps import DEPENDENCIES
from finetune_service.api.evaluations import EvaluationsController
from finetune_service.api.health import health, ready
from finetune_service.api.jobs import JobsController
from finetune_service.api.openai_chat import OpenAIController, SavedResponsesController
from finetune_service.api.openai_files import OpenAIFilesController
from finetune_service.api.openai_fine_tuning import OpenAIFineTuningController
from finetune_service.api.openai_media import MediaLinksController, OpenAIMediaController
from finetune_service.api.problems import EXCEPTION_HANDLERS, document_error_responses
from finetune_service.api.projects import ProjectsController
from finetune_service.api.retrieval import RetrievalController
from finetune_service.api.robin import RobinController
from finetune_service.api.streaming import NO_COMPRESSION
from finetune_service.auth import ApiKeyMiddleware
from finetune_service.container import Services
from finetune_service.rate_limit import rate_limit_middleware
from finetune_service.request_guard import request_guard_middleware
from finetune_service.request_id import request_id_middleware
from finetune_service.settings import Settings

QUIET_LOGGERS = ("httpx", "httpx2", "openai", "together", "alembic.runtime.migration", "apscheduler")
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/schema", "^/media/images/"]  # signed links carry their own check


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.start(settings)
        app.state.services = services
        try:
            yield
        finally:
            await services.close()

    app = Litestar(
        route_handlers=[health, ready, CatalogController, DatasetsController, JobsController, ProjectsController,
                        OpenAIController, SavedResponsesController, EvaluationsController,
                        OpenAIFilesController, OpenAIFineTuningController, RetrievalController,
                        RobinController, OpenAIMediaController, MediaLinksController],
        lifespan=[lifespan],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            request_id_middleware,
            request_guard_middleware,
            DefineMiddleware(ApiKeyMiddleware, exclude=PUBLIC_PATHS),
            rate_limit_middleware,
        ],
        # Level 6 (zlib's default) compresses JSON about as well as 9 at half the CPU.
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024, gzip_compress_level=6,
                                             exclude_opt_key=NO_COMPRESSION),
        request_max_body_size=settings.max_upload_bytes,
        openapi_config=OpenAPIConfig(
            title="finetune-service",
            version=__version__,
            description="One REST API over every LLM fine-tuning provider.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin(path="/scalar")],
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="An API key"),
            }),
            security=[{"bearer": []}],
        ),
        logging_config=LoggingConfig(
            root={"level": "INFO", "handlers": ["queue_listener"]},
            # One INFO line per provider HTTP call costs more than relaying a streamed chunk.
            loggers={name: {"level": "WARNING", "propagate": True} for name in QUIET_LOGGERS},
            log_exceptions="never",
        ),
        debug=False,
    )
    # Litestar documents every 400 as its own JSON shape; document the shapes we really answer.
    document_error_responses(app.openapi_schema)
    return app


def _freeze_what_was_built(_app: Litestar) -> None:
    gc.collect()
    gc.freeze()


def served_app(settings: Settings | None = None) -> Litestar:
    """The app as `finetune-service serve` runs it. Once started, everything built so far (modules,
    routes, services: ~270,000 objects) lives as long as the process, so it is moved out of the
    cyclic garbage collector's reach: under load its full passes rescanned all of it and stalled
    every request for 200-330 ms (measured with `benchmarks/bench_load.py`). Not done in
    `create_app`, because tests build and drop many apps in one process and frozen objects are
    only ever freed by reference counting. Arrow gets the pool meant for bulk conversions
    (`dataset_formats.memory_pool`)."""
    use_bulk_memory_pool()
    app = create_app(settings)
    app.on_startup.append(_freeze_what_was_built)
    return app


def served_asgi(settings: Settings | None = None) -> AccessLog:
    """What `finetune-service serve` hands uvicorn, with uvicorn's own access log off: the served
    app inside the access log that writes its line after each response (`access_log.py`)."""
    return AccessLog(served_app(settings))
