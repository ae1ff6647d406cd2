"""Build every provider from settings, in one place."""

from __future__ import annotations

from finetune_service.providers.base import FineTuneProvider, ProviderName
from finetune_service.providers.fireworks import FireworksProvider
from finetune_service.providers.openai_provider import OpenAIProvider
from finetune_service.providers.sandbox import SandboxProvider
from finetune_service.providers.together import TogetherProvider
from finetune_service.settings import Settings


def build_providers(settings: Settings) -> dict[ProviderName, FineTuneProvider]:
    timeout = settings.provider_timeout_seconds
    return {
        ProviderName.TOGETHER_AI: TogetherProvider(settings.together, timeout=timeout),
        ProviderName.FIREWORKS_AI: FireworksProvider(settings.fireworks, timeout=timeout),
        ProviderName.OPENAI: OpenAIProvider(settings.openai, timeout=timeout),
        ProviderName.SANDBOX: SandboxProvider(
            settings.data_dir / "sandbox", step_seconds=settings.sandbox_step_seconds
        ),
    }
