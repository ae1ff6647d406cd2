"""SQLModel tables. Every tenant-owned row carries `tenant_id`; services filter on it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _ts() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True)
    tenant_id: str = Field(index=True, max_length=128)
    # sha256 of the key: keys are 32 random bytes, so a fast hash is enough and lookups stay O(1).
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    revoked: bool = Field(default=False)
