from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dataset_formats import writer as writer_module
from dataset_formats.writer import AtomicJsonlWriter


def test_writes_compact_utf8_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with AtomicJsonlWriter(target) as writer:
        writer.write_record({"text": "café 日本語 🚀 \u2028", "n": [1, None]})
        writer.write(b'{"raw":true}\n')
        assert target.read_text() == "old\n"  # nothing visible until the writer closes
    assert target.read_bytes() == '{"text":"café 日本語 🚀 \u2028","n":[1,null]}\n{"raw":true}\n'.encode()
    assert writer.bytes_written == len(target.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.parametrize("existing", [False, True])
def test_exception_mid_write_leaves_no_target_and_no_temp_file(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "out.jsonl"
    if existing:
        target.write_text("previous\n")
    with pytest.raises(RuntimeError, match="boom"), AtomicJsonlWriter(target) as writer:
        writer.write_record({"a": 1})
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == (["out.jsonl"] if existing else [])
    if existing:
        assert target.read_text() == "previous\n"


def test_failure_while_finishing_closes_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module.os, "fsync", full_disk)
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="No space"), AtomicJsonlWriter(tmp_path / "out.jsonl") as writer:
        writer.write(b"line\n")
    assert list(tmp_path.iterdir()) == [] and len(os.listdir("/proc/self/fd")) == open_before
