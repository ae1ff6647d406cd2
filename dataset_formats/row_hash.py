"""Stable row fingerprints (blake2b, not Python's per-process ``hash``) for splits and duplicates."""

from __future__ import annotations

import hashlib

from dataset_formats.expressions import Row


def content_key(row: Row) -> str:
    # Name-value pairs of present cells, so rows missing a JSON key hash the same in every batch.
    return "\x1e".join(f"{name}\x1f{value}" for name, value in row.items() if value is not None)


def digest64(key: str, seed: int | None = None) -> int:
    salt = b"" if seed is None else str(seed).encode()
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, key=salt).digest(), "big")


def unit_hash(key: str, seed: int) -> float:
    """Uniform in [0, 1), fixed for a given key and seed on every platform and Python version."""
    return digest64(key, seed) / 2.0**64
