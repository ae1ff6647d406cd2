"""Frozen service settings read from the environment.

Every knob the service has lives here, so the README's configuration table and the
code cannot drift: `Settings.describe()` is what the table is written from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from finetune_service.errors import ConfigurationError


def _parse_api_keys(raw: str) -> dict[str, str]:
    """`tenant:key,tenant:key` -> {key: tenant}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        tenant, sep, key = item.partition(":")
        if not sep or not tenant.strip() or not key.strip():
            raise ConfigurationError(
                f"FINETUNE_API_KEYS entry {item[:3]!r}... must look like 'tenant:key' (comma separated)"
            )
        keys[key.strip()] = tenant.strip()
    return keys


def _parse_aliases(raw: str) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        alias, sep, target = item.partition("=")
        if not sep or not alias.strip() or "/" not in target:
            raise ConfigurationError(
                f"FINETUNE_MODEL_ALIASES entry {item!r} must look like 'ALIAS=provider/model'"
            )
        aliases[alias.strip()] = target.strip()
    return aliases


def _parse_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _parse_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE + _FALSE:
        raise ConfigurationError(f"{name} must be true or false (or 1/0, yes/no, on/off), got {raw!r}")
    return raw in _TRUE


def _parse_secret(raw: str) -> str | None:
    secret = raw.strip()
    if secret and len(secret) < 32:
        raise ConfigurationError("FINETUNE_SECRET_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    return secret or None


DEFAULT_MODEL_ALIASES = {
    "ROBIN_4": "sandbox/sandbox-chat-large",
    "ROBIN_3": "sandbox/sandbox-chat-small",
    "ROBIN_4_TOOLS": "sandbox/sandbox-chat-large",
    "ROBIN_3_TOOLS": "sandbox/sandbox-chat-small",
}


@dataclass(frozen=True)
class ProviderCredentials:
    api_key: str | None = None
    base_url: str | None = None
    account_id: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.api_key)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    database_url: str = ""
    api_keys: dict[str, str] = field(default_factory=dict)
    max_upload_bytes: int = 1024 * 1024 * 1024
    sync_interval_seconds: float = 30.0
    provider_timeout_seconds: float = 30.0
    models_cache_seconds: float = 300.0
    model_aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    fetch_allowlist: tuple[str, ...] = ()
    sandbox_step_seconds: float = 2.0
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 200
    # PostgreSQL: answer polls from memory kept current by LISTEN/NOTIFY (db/change_feed.py). Off for
    # a connection pooler in transaction mode (PgBouncer's default), where LISTEN does not work.
    change_feed: bool = True
    # Signs expiring media links (HMAC-SHA256). Unset: a random key kept in <data dir>/secret_key.
    secret_key: str | None = None
    together: ProviderCredentials = ProviderCredentials()
    openai: ProviderCredentials = ProviderCredentials()
    fireworks: ProviderCredentials = ProviderCredentials()

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite+aiosqlite:///{(self.data_dir / 'finetune.db').resolve()}"
            )

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("FINETUNE_DATA_DIR", "").strip() or "./data")
        return cls(
            data_dir=data_dir,
            database_url=normalize_database_url(env.get("FINETUNE_DATABASE_URL", "").strip()),
            api_keys=_parse_api_keys(env.get("FINETUNE_API_KEYS", "")),
            max_upload_bytes=_parse_int(env, "FINETUNE_MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1),
            sync_interval_seconds=_parse_float(env, "FINETUNE_SYNC_INTERVAL", cls.sync_interval_seconds),
            provider_timeout_seconds=_parse_float(
                env, "FINETUNE_PROVIDER_TIMEOUT", cls.provider_timeout_seconds, minimum=0.1
            ),
            models_cache_seconds=_parse_float(env, "FINETUNE_MODELS_CACHE_SECONDS", cls.models_cache_seconds),
            model_aliases={**DEFAULT_MODEL_ALIASES, **_parse_aliases(env.get("FINETUNE_MODEL_ALIASES", ""))},
            fetch_allowlist=tuple(
                filter(None, (h.strip() for h in env.get("FINETUNE_FETCH_ALLOWLIST", "").split(",")))
            ),
            sandbox_step_seconds=_parse_float(env, "FINETUNE_SANDBOX_STEP_SECONDS", cls.sandbox_step_seconds),
            rate_limit_per_second=_parse_float(env, "FINETUNE_RATE_LIMIT", cls.rate_limit_per_second),
            rate_limit_burst=_parse_int(env, "FINETUNE_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1),
            change_feed=_parse_bool(env, "FINETUNE_CHANGE_FEED", cls.change_feed),
            secret_key=_parse_secret(env.get("FINETUNE_SECRET_KEY", "")),
            together=ProviderCredentials(
                api_key=env.get("TOGETHER_API_KEY") or None, base_url=env.get("TOGETHER_BASE_URL") or None
            ),
            openai=ProviderCredentials(
                api_key=env.get("OPENAI_API_KEY") or None, base_url=env.get("OPENAI_BASE_URL") or None
            ),
            fireworks=ProviderCredentials(
                api_key=env.get("FIREWORKS_API_KEY") or None,
                base_url=env.get("FIREWORKS_BASE_URL") or None,
                account_id=env.get("FIREWORKS_ACCOUNT_ID") or None,
            ),
        )

    def __repr__(self) -> str:
        # Keys must never reach logs, even through a stray repr().
        shown = ", ".join(
            f"{f.name}=<redacted>" if f.name in {"api_keys", "secret_key", "together", "openai", "fireworks"}
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"Settings({shown})"


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite:///) and pick the async driver."""
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"FINETUNE_DATABASE_URL must be a URL like sqlite:///path or postgresql://..., got {url!r}"
        )
    base = scheme.split("+", 1)[0]
    if base in {"postgres", "postgresql"}:
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigurationError(f"FINETUNE_DATABASE_URL scheme {scheme!r} is not supported: use sqlite or postgresql")
