from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.settings import Settings
from tests.conftest import AUTH_A, AUTH_B


async def test_missing_key_is_401_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/providers")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Authorization: Bearer" in response.json()["detail"]


async def test_wrong_key_is_401_and_does_not_echo_it(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/providers", headers={"Authorization": "Bearer not-a-key-123"})
    assert response.status_code == 401
    assert "not-a-key-123" not in response.text
    assert "Invalid API key" in response.json()["detail"]


async def test_non_bearer_scheme_is_401(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/providers", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_health_and_ready_need_no_key(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_unknown_route_is_problem_404_with_request_id(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/finetune/nothing-here", headers=AUTH_A)
    assert response.status_code == 404
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert "/schema" in body["detail"]


async def test_v1_errors_use_openai_shape(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v1/nothing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "/v1/nothing" in error["message"]


async def test_parameter_validation_names_parameter_and_range(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/api/finetune/parameters/SANDBOX/validate",
        json={"parameters": {"n_epochs": 50, "learning_rate": "fast", "colour": "blue"}},
        headers=AUTH_A,
    )
    assert response.status_code == 422
    problem = response.json()
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert fields["parameters.n_epochs"] == "must be an integer >= 1 and <= 20, got 50"
    assert "got 'fast'" in fields["parameters.learning_rate"]
    assert fields["parameters.colour"].startswith("unknown parameter for Sandbox (offline); known:")
    assert "n_epochs" in problem["detail"]


async def test_valid_parameters_come_back_with_defaults(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/api/finetune/parameters/sandbox/validate", json={"parameters": {"n_epochs": 3}}, headers=AUTH_A
    )
    assert response.status_code == 200
    assert response.json()["parameters"] == {
        "n_epochs": 3, "learning_rate": 1e-5, "batch_size": 8, "training_method": "sft",
    }


async def test_malformed_json_body_is_400_naming_the_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/api/finetune/parameters/sandbox/validate", content=b"{not json", headers={
            **AUTH_A, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON is malformed" in response.json()["detail"]


async def test_wrong_body_type_names_the_field(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/api/finetune/parameters/sandbox/validate", json={"parameters": [1, 2]}, headers=AUTH_A
    )
    assert response.status_code == 400
    assert "parameters" in response.json()["detail"]


async def test_ready_fails_when_database_unreachable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/ready")).status_code == 200
        await app.state.services.database.dispose()
        (tmp_path / "db.sqlite").unlink()
        (tmp_path / "db.sqlite").mkdir()  # a directory where the database file was: unopenable
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "FINETUNE_DATABASE_URL" in response.json()["detail"]


async def test_ready_fails_when_postgres_unreachable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        services = app.state.services
        from finetune_service.db.engine import Database

        await services.database.dispose()
        services.database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == 503


async def test_open_mode_serves_default_tenant_without_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.get("/api/finetune/providers", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 200
        assert (await client.get("/api/finetune/providers")).status_code == 200


async def test_requests_get_503_while_the_database_is_down_and_recover(tmp_path: Path) -> None:
    from finetune_service.db.engine import Database

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
                        api_keys={"k": "t"}, sync_interval_seconds=0)
    app = create_app(settings)
    headers = {"Authorization": "Bearer k"}
    async with AsyncTestClient(app) as client:
        services = app.state.services
        healthy = services.database
        services.database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        services.datasets.database = services.database
        down = await client.get("/api/finetune/datasets", headers=headers)
        assert down.status_code == 503
        assert down.headers["retry-after"] == "5"
        assert "database is not reachable" in down.json()["detail"]
        assert (await client.get("/ready")).status_code == 503
        await services.database.dispose()
        services.database = services.datasets.database = healthy
        assert (await client.get("/api/finetune/datasets", headers=headers)).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_each_tenant_is_rate_limited_on_its_own(settings: Settings) -> None:
    from dataclasses import replace

    limited = replace(settings, rate_limit_per_second=0.5, rate_limit_burst=2)
    async with AsyncTestClient(create_app(limited)) as client:
        codes = [(await client.get("/api/finetune/providers", headers=AUTH_A)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        throttled = await client.get("/api/finetune/providers", headers=AUTH_A)
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert "FINETUNE_RATE_LIMIT" in throttled.json()["detail"]
        assert (await client.get("/api/finetune/providers", headers=AUTH_B)).status_code == 200
        assert (await client.get("/health")).status_code == 200
        openai_shape = await client.get("/v1/models", headers=AUTH_A)
        assert openai_shape.status_code == 429 and openai_shape.json()["error"]["type"] == "rate_limit_error"


async def test_open_mode_refuses_cross_site_writes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
                        sync_interval_seconds=0)
    async with AsyncTestClient(create_app(settings)) as client:
        evil = await client.post("/api/finetune/projects", json={"name": "x"},
                                 headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "Cross-site request from http://evil.example" in evil.json()["detail"]
        same = await client.post("/api/finetune/projects", json={"name": "x"},
                                 headers={"Origin": "http://testserver.local"})
        assert same.status_code == 201
        assert (await client.post("/api/finetune/projects", json={"name": "y"})).status_code == 201
        reads = await client.get("/api/finetune/projects", headers={"Origin": "http://evil.example"})
        assert [p["name"] for p in reads.json()["projects"]] == ["x", "y"]


async def test_text_plain_bodies_are_refused(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/api/finetune/projects", content=b'{"name": "x"}',
                                 headers={**AUTH_A, "Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    assert (await client.get("/api/finetune/projects", headers=AUTH_A)).json()["projects"] == []
