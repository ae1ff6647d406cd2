from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import AUTH_A


async def test_providers_lists_every_provider_with_configuration(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/providers", headers=AUTH_A)
    assert response.status_code == 200
    body = response.json()
    assert body["providers"]["SANDBOX"] == "Sandbox (offline)"
    sandbox = next(d for d in body["details"] if d["id"] == "SANDBOX")
    assert sandbox["configured"] is True and sandbox["offline"] is True


async def test_parameters_of_sandbox_are_typed_with_defaults_and_ranges(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/parameters/SANDBOX", headers=AUTH_A)
    assert response.status_code == 200
    params = {p["name"]: p for p in response.json()["parameters"]}
    assert params["n_epochs"] == {
        "name": "n_epochs", "type": "integer", "description": params["n_epochs"]["description"],
        "required": False, "default": 1, "minimum": 1, "maximum": 20,
    }
    assert params["training_method"]["choices"] == ["sft", "dpo"]


async def test_parameters_accept_lowercase_prefix(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/parameters/sandbox", headers=AUTH_A)
    assert response.status_code == 200
    assert response.json()["provider"] == "SANDBOX"


async def test_unknown_provider_is_404_listing_known_ones(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/parameters/NOPE", headers=AUTH_A)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 404
    assert "NOPE" in problem["detail"] and "SANDBOX" in problem["detail"]


async def test_models_say_where_the_list_comes_from(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/models", headers=AUTH_A)
    assert response.status_code == 200
    listings = {p["provider"]: p for p in response.json()["providers"]}
    sandbox = listings["SANDBOX"]
    assert sandbox["source"] == "live"
    assert {m["id"] for m in sandbox["models"]} == {"sandbox-chat-small", "sandbox-chat-large"}
