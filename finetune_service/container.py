"""The composition root: every long-lived service the app holds, built from settings."""

from __future__ import annotations

from dataclasses import dataclass

from finetune_service.auth import KeyStore
from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.providers.base import FineTuneProvider, ProviderName
from finetune_service.providers.registry import build_providers
from finetune_service.services.catalog import Catalog
from finetune_service.settings import Settings


@dataclass
class Services:
    settings: Settings
    database: Database
    key_store: KeyStore
    providers: dict[ProviderName, FineTuneProvider]
    catalog: Catalog

    @classmethod
    async def start(cls, settings: Settings, *, migrate: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database_url)
        if migrate:
            await upgrade(database)
        key_store = KeyStore(database, settings.api_keys)
        await key_store.refresh_mode()
        providers = build_providers(settings)
        catalog = Catalog(providers, timeout_seconds=settings.provider_timeout_seconds,
                          cache_seconds=settings.models_cache_seconds)
        return cls(settings=settings, database=database, key_store=key_store, providers=providers,
                   catalog=catalog)

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        await self.database.dispose()
