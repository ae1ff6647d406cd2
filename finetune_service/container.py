"""The composition root: every long-lived service the app holds, built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune_service.auth import KeyStore
from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.providers.base import FineTuneProvider, ProviderName
from finetune_service.providers.registry import build_providers
from finetune_service.rate_limit import TenantRateLimiter
from finetune_service.retrieval.fetch import FetchPolicy
from finetune_service.scheduler import SyncScheduler
from finetune_service.services.catalog import Catalog
from finetune_service.services.completions import CompletionsService
from finetune_service.services.datasets import DatasetsService
from finetune_service.services.evaluations import EvaluationsService
from finetune_service.services.jobs import JobsService
from finetune_service.services.media import MediaService, load_secret
from finetune_service.services.projects import ProjectsService
from finetune_service.services.retrieval import RetrievalService
from finetune_service.services.robin import RobinService
from finetune_service.services.sync import JobSync
from finetune_service.settings import Settings
from finetune_service.storage import DatasetStore


@dataclass
class Services:
    settings: Settings
    database: Database
    key_store: KeyStore
    providers: dict[ProviderName, FineTuneProvider]
    catalog: Catalog
    datasets: DatasetsService
    sync: JobSync
    jobs: JobsService
    projects: ProjectsService
    scheduler: SyncScheduler | None = None
    rate_limiter: TenantRateLimiter | None = None
    completions: CompletionsService = field(init=False)
    evaluations: EvaluationsService = field(init=False)
    retrieval: RetrievalService = field(init=False)
    media: MediaService = field(init=False)
    robin: RobinService = field(init=False)

    @classmethod
    async def start(cls, settings: Settings, *, migrate: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database_url, change_feed=settings.change_feed)
        if migrate:
            await upgrade(database)
        key_store = KeyStore(database, settings.api_keys)
        await key_store.refresh_mode()
        providers = build_providers(settings)
        catalog = Catalog(providers, timeout_seconds=settings.provider_timeout_seconds,
                          cache_seconds=settings.models_cache_seconds)
        store = DatasetStore(settings.datasets_dir)
        store.clear_staging()
        datasets = DatasetsService(database, store, settings.max_upload_bytes)
        sync = JobSync(database, providers, store, sync_interval=settings.sync_interval_seconds or 30.0)
        services = cls(
            settings=settings, database=database, key_store=key_store, providers=providers, catalog=catalog,
            datasets=datasets, sync=sync, jobs=JobsService(database, catalog, datasets, sync),
            projects=ProjectsService(database, datasets),
        )
        services.completions = CompletionsService(database, catalog, dict(settings.model_aliases))
        services.evaluations = EvaluationsService(database, services.jobs, datasets, services.completions)
        services.retrieval = RetrievalService(database, services.completions,
                                              FetchPolicy(allowlist=settings.fetch_allowlist))
        services.media = MediaService(settings.data_dir / "media", load_secret(settings), catalog,
                                      dict(settings.model_aliases))
        services.robin = RobinService(database, catalog, datasets, services.jobs, services.evaluations,
                                      services.retrieval,
                                      dict(settings.model_aliases), settings.data_dir / "robin-uploads")
        if settings.rate_limit_per_second > 0:
            services.rate_limiter = TenantRateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        if settings.sync_interval_seconds > 0:
            services.scheduler = SyncScheduler(sync, settings.sync_interval_seconds)
            services.scheduler.start()
        return services

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.evaluations.close()
        await self.retrieval.close()
        for provider in self.providers.values():
            await provider.aclose()
        await self.database.dispose()
