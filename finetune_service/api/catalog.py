"""GET /api/finetune/providers, /parameters/{provider}, /models."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from finetune_service.providers.parameters import ParamSpec
from finetune_service.services.catalog import Catalog


class ProviderDetail(msgspec.Struct):
    id: str
    name: str
    configured: bool
    offline: bool


class ProvidersResponse(msgspec.Struct):
    providers: dict[str, str]
    details: list[ProviderDetail]


class Parameter(msgspec.Struct, omit_defaults=True):
    name: str
    type: str
    description: str
    required: bool
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: list[Any] | None = None
    also_accepts: list[str] | None = None


class ParametersResponse(msgspec.Struct):
    provider: str
    parameters: list[Parameter]


class ValidateParametersRequest(msgspec.Struct, forbid_unknown_fields=True):
    parameters: dict[str, Any] = {}


class ValidatedParameters(msgspec.Struct):
    provider: str
    parameters: dict[str, Any]


class Model(msgspec.Struct):
    id: str
    name: str
    context_length: int | None
    supports_lora: bool
    supports_full: bool
    training_methods: list[str]


class ProviderModels(msgspec.Struct):
    provider: str
    name: str
    configured: bool
    source: str
    note: str | None
    models: list[Model]


class ModelsResponse(msgspec.Struct):
    providers: list[ProviderModels]


def _parameter(spec: ParamSpec) -> Parameter:
    return Parameter(
        name=spec.name, type=spec.type, description=spec.description, required=spec.required,
        default=spec.default, minimum=spec.minimum, maximum=spec.maximum,
        exclusive_minimum=spec.exclusive_minimum,
        choices=list(spec.choices) if spec.choices is not None else None,
        also_accepts=list(spec.also_accepts) or None,
    )


class CatalogController(Controller):
    path = "/api/finetune"
    tags = ["catalog"]

    @get("/providers", summary="Providers and whether each is configured")
    async def list_providers(self, catalog: NamedDependency[Catalog]) -> ProvidersResponse:
        items = catalog.providers.values()
        return ProvidersResponse(
            providers={p.name.value: p.display_name for p in items},
            details=[ProviderDetail(id=p.name.value, name=p.display_name, configured=p.configured,
                                    offline=p.name.value == "SANDBOX") for p in items],
        )

    @get("/parameters/{provider:str}", summary="A provider's tunable parameters")
    async def list_parameters(self, provider: FromPath[str], catalog: NamedDependency[Catalog]) -> ParametersResponse:
        resolved = catalog.provider(provider)
        return ParametersResponse(provider=resolved.name.value,
                                  parameters=[_parameter(s) for s in resolved.parameter_specs()])

    @post("/parameters/{provider:str}/validate", status_code=200,
          summary="Check parameters against a provider's schema; returns them with defaults filled in")
    async def validate_parameters(
        self, provider: FromPath[str], data: JSONBody[ValidateParametersRequest], catalog: NamedDependency[Catalog]
    ) -> ValidatedParameters:
        resolved = catalog.provider(provider)
        return ValidatedParameters(provider=resolved.name.value,
                                   parameters=catalog.validate(provider, data.parameters))

    @get("/models", summary="Fine-tunable base models per provider (live when configured)")
    async def list_models(self, catalog: NamedDependency[Catalog]) -> ModelsResponse:
        listings = await catalog.models()
        return ModelsResponse(providers=[
            ProviderModels(
                provider=item.provider.name.value, name=item.provider.display_name,
                configured=item.provider.configured, source=item.source, note=item.note,
                models=[Model(id=m.id, name=m.name, context_length=m.context_length, supports_lora=m.supports_lora,
                              supports_full=m.supports_full, training_methods=list(m.training_methods))
                        for m in item.models],
            )
            for item in listings
        ])
