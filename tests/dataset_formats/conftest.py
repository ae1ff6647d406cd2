from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def sample() -> Callable[[str], Path]:
    def path(name: str) -> Path:
        return SAMPLE_DATA / name

    return path


@pytest.fixture
def write_bytes(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write
