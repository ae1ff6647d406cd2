from __future__ import annotations

from pathlib import Path

import pytest

from finetune_service.errors import ConfigurationError
from finetune_service.settings import DEFAULT_MODEL_ALIASES, Settings, normalize_database_url


def test_defaults_use_sqlite_in_data_dir() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == Path("./data")
    assert settings.database_url == f"sqlite+aiosqlite:///{Path('./data/finetune.db').resolve()}"
    assert settings.api_keys == {}
    assert settings.sync_interval_seconds == 30.0
    assert settings.model_aliases == DEFAULT_MODEL_ALIASES
    assert not settings.together.configured


def test_everything_from_env(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "FINETUNE_DATA_DIR": str(tmp_path),
        "FINETUNE_DATABASE_URL": "postgres://u@db:5432/ft",
        "FINETUNE_API_KEYS": "acme:k1, globex:k2",
        "FINETUNE_MAX_UPLOAD_BYTES": "1000",
        "FINETUNE_SYNC_INTERVAL": "0",
        "FINETUNE_MODEL_ALIASES": "ROBIN_4=together/meta-llama/Llama-3-8b",
        "FINETUNE_FETCH_ALLOWLIST": "127.0.0.1, example.test",
        "FINETUNE_RATE_LIMIT": "0", "FINETUNE_RATE_LIMIT_BURST": "10", "FINETUNE_CHANGE_FEED": "Off",
        "TOGETHER_API_KEY": "tk", "TOGETHER_BASE_URL": "http://127.0.0.1:9",
        "OPENAI_API_KEY": "ok", "FIREWORKS_API_KEY": "fk", "FIREWORKS_ACCOUNT_ID": "acct",
    })
    assert settings.database_url == "postgresql+asyncpg://u@db:5432/ft"
    assert settings.api_keys == {"k1": "acme", "k2": "globex"}
    assert settings.max_upload_bytes == 1000
    assert settings.sync_interval_seconds == 0
    assert settings.model_aliases["ROBIN_4"] == "together/meta-llama/Llama-3-8b"
    assert settings.model_aliases["ROBIN_3"] == DEFAULT_MODEL_ALIASES["ROBIN_3"]
    assert settings.fetch_allowlist == ("127.0.0.1", "example.test")
    assert settings.rate_limit_per_second == 0 and settings.rate_limit_burst == 10
    assert settings.change_feed is False and Settings.from_env({}).change_feed is True
    assert settings.together.configured and settings.together.base_url == "http://127.0.0.1:9"
    assert settings.fireworks.account_id == "acct"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FINETUNE_API_KEYS": "no-colon"}, "tenant:key"),
        ({"FINETUNE_API_KEYS": ":key"}, "tenant:key"),
        ({"FINETUNE_MAX_UPLOAD_BYTES": "lots"}, "FINETUNE_MAX_UPLOAD_BYTES must be a whole number"),
        ({"FINETUNE_MAX_UPLOAD_BYTES": "0"}, "must be >= 1"),
        ({"FINETUNE_SYNC_INTERVAL": "-1"}, "FINETUNE_SYNC_INTERVAL must be >= 0"),
        ({"FINETUNE_DATABASE_URL": "mysql://x/y"}, "not supported"),
        ({"FINETUNE_DATABASE_URL": "just-a-name"}, "must be a URL"),
        ({"FINETUNE_MODEL_ALIASES": "ROBIN_4"}, "ALIAS=provider/model"),
        ({"FINETUNE_CHANGE_FEED": "maybe"}, "FINETUNE_CHANGE_FEED must be true or false"),
    ],
)
def test_bad_values_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_repr_never_shows_keys() -> None:
    settings = Settings.from_env({"FINETUNE_API_KEYS": "acme:supersecret", "OPENAI_API_KEY": "sk-secret"})
    text = repr(settings)
    assert "supersecret" not in text and "sk-secret" not in text
    assert "api_keys=<redacted>" in text


def test_sqlite_urls_get_async_driver() -> None:
    assert normalize_database_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert normalize_database_url("postgresql+psycopg://a/b") == "postgresql+asyncpg://a/b"
