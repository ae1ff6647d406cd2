"""Providers, their tunable parameters and their fine-tunable base models."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from finetune_service.errors import NotFound
from finetune_service.providers.base import BaseModelInfo, FineTuneProvider, ProviderName
from finetune_service.providers.parameters import ParamSpec, validate_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelListing:
    provider: FineTuneProvider
    models: list[BaseModelInfo]
    source: str  # "live" or "static"
    note: str | None = None


@dataclass
class _CacheEntry:
    listing: ModelListing
    expires: float


@dataclass
class Catalog:
    providers: dict[ProviderName, FineTuneProvider]
    timeout_seconds: float = 10.0
    cache_seconds: float = 300.0
    _cache: dict[ProviderName, _CacheEntry] = field(default_factory=dict)

    def provider(self, name: str) -> FineTuneProvider:
        parsed = ProviderName.parse(name)
        if parsed is None or parsed not in self.providers:
            known = ", ".join(p.value for p in self.providers)
            raise NotFound(f"Unknown provider {name!r}; known providers: {known}", param="provider")
        return self.providers[parsed]

    def parameters(self, name: str) -> list[ParamSpec]:
        return list(self.provider(name).parameter_specs())

    def validate(self, name: str, values: dict[str, Any] | None) -> dict[str, Any]:
        provider = self.provider(name)
        return validate_parameters(provider.display_name, provider.parameter_specs(), values)

    async def _listing(self, provider: FineTuneProvider) -> ModelListing:
        cached = self._cache.get(provider.name)
        if cached and cached.expires > time.monotonic():
            return cached.listing
        if not provider.configured:
            return ModelListing(provider, list(provider.static_models()), "static",
                                f"{provider.display_name} is not configured; showing the maintained list")
        try:
            models = await asyncio.wait_for(provider.list_models(), self.timeout_seconds)
            listing = ModelListing(provider, models, "live")
        except Exception as exc:  # any failure of a live catalog falls back to the static list
            log.warning("listing %s models failed: %s", provider.name, type(exc).__name__)
            return ModelListing(provider, list(provider.static_models()), "static",
                                f"{provider.display_name} could not be reached; showing the maintained list")
        self._cache[provider.name] = _CacheEntry(listing, time.monotonic() + self.cache_seconds)
        return listing

    async def models(self) -> list[ModelListing]:
        return list(await asyncio.gather(*(self._listing(p) for p in self.providers.values())))
