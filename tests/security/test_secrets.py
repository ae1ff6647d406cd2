"""Provider keys and API keys never appear in responses, logs, error messages or the schema."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.settings import ProviderCredentials, Settings
from tests.api.helpers import uploaded_id
from tests.emulators.server import serve_in_thread
from tests.emulators.together import create_together_emulator

API_KEY = "tenant-key-S3CRET-4f9a"
PROVIDER_KEY = "together-key-S3CRET-77b1"
WRONG_PROVIDER_KEY = "together-wrong-S3CRET-0c2d"
SECRETS = (API_KEY, PROVIDER_KEY, WRONG_PROVIDER_KEY)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked in {where}"
        assert "S3CRET" not in text, f"a secret-looking value leaked in {where}"


@pytest.mark.parametrize("provider_key", [PROVIDER_KEY, WRONG_PROVIDER_KEY])
async def test_no_secret_in_any_response_or_log(
    provider_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = create_together_emulator(api_key=PROVIDER_KEY, step_seconds=0.05)
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(emulator.app) as url:
        settings = Settings(data_dir=tmp_path, api_keys={API_KEY: "acme"}, sync_interval_seconds=0,
                            together=ProviderCredentials(api_key=provider_key, base_url=url))
        auth = {"Authorization": f"Bearer {API_KEY}"}
        bodies: list[str] = []
        async with AsyncTestClient(create_app(replace(settings))) as client:
            dataset = await uploaded_id(client, headers=auth)
            calls = [
                client.get("/api/finetune/providers", headers=auth),
                client.get("/api/finetune/models", headers=auth),
                client.get("/api/finetune/parameters/TOGETHER_AI", headers=auth),
                client.post("/api/finetune/jobs", headers=auth, json={
                    "name": "x", "provider": "TOGETHER_AI", "dataset_path": dataset,
                    "model_name": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"}),
                client.post("/api/finetune/jobs", headers=auth, json={
                    "name": "y", "provider": "TOGETHER_AI", "model_name": "acme/unknown", "dataset_path": dataset}),
                client.post("/v1/chat/completions", headers=auth, json={
                    "model": "together/acme/unknown", "messages": [{"role": "user", "content": "hi"}]}),
                client.get("/api/finetune/jobs", headers=auth),
                client.get("/api/finetune/nope", headers={"Authorization": f"Bearer {API_KEY}x"}),
                client.get("/schema/openapi.json"),
            ]
            for call in calls:
                response = await call
                bodies.append(f"{response.status_code} {dict(response.headers)} {response.text}")
            jobs = (await client.get("/api/finetune/jobs", headers=auth)).json()["jobs"]
            for job in jobs:
                events = await client.get(f"/api/finetune/jobs/{job['id']}/events", headers=auth)
                bodies.append(events.text)
    for index, body in enumerate(bodies):
        assert_clean(body, f"response {index}")
    assert_clean("\n".join(record.getMessage() for record in caplog.records), "logs")
    assert_clean("\n".join(str(record.exc_info) for record in caplog.records if record.exc_info), "log tracebacks")
    assert any(b.startswith(("201", "422", "404", "502")) for b in bodies)
