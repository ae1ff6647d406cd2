"""API-key authentication: `Authorization: Bearer <key>` -> Principal(tenant_id)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import func, select
from sqlmodel import col

from finetune_service.db.engine import Database
from finetune_service.db.tables import ApiKey
from finetune_service.errors import Unauthorized

SINGLE_TENANT = "default"
KEY_PREFIX = "fts_"


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """Knows every valid key: the operator's (FINETUNE_API_KEYS) and the stored, hashed ones."""

    def __init__(self, database: Database, configured: dict[str, str]) -> None:
        self._database = database
        # Compare hashes, so the lookup time does not depend on how much of a key matched.
        self._configured = {hash_key(key): tenant for key, tenant in configured.items()}
        self.open_mode = False

    async def stored_key_count(self) -> int:
        async with self._database.session() as session:
            active = select(func.count()).select_from(ApiKey).where(col(ApiKey.revoked).is_(False))
            result = await session.execute(active)
            return int(result.scalar_one())

    async def refresh_mode(self) -> None:
        """Single-tenant (no auth) only when no key exists anywhere; decided at start."""
        self.open_mode = not self._configured and await self.stored_key_count() == 0

    async def create(self, tenant_id: str, name: str | None = None) -> tuple[ApiKey, str]:
        key = generate_key()
        row = ApiKey(tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:8], name=name)
        async with self._database.session() as session:
            session.add(row)
        return row, key

    async def authenticate(self, key: str) -> Principal | None:
        digest = hash_key(key)
        for known, tenant in self._configured.items():
            if hmac.compare_digest(known, digest):
                return Principal(tenant_id=tenant)
        # Looked up by the hash, so how long the lookup takes says nothing about the key itself.
        found = await self._database.polling.active_api_key(digest)
        if found is None:
            return None
        key_id, tenant_id = found
        return Principal(tenant_id=tenant_id, key_id=key_id)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        store: KeyStore = connection.app.state.services.key_store
        if store.open_mode:
            # Clients such as the openai SDK always send some key; with no keys configured
            # anywhere there is nothing to check it against, and the bind is loopback-only.
            return AuthenticationResult(user=Principal(tenant_id=SINGLE_TENANT), auth=None)
        token = bearer_token(connection.headers.get("authorization"))
        if token is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        principal = await store.authenticate(token)
        if principal is None:
            raise Unauthorized("Invalid API key: check the key, or create one with "
                               "'finetune-service keys create --tenant NAME'.")
        return AuthenticationResult(user=principal, auth=token)
