from __future__ import annotations

import errno
import fcntl
import itertools
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


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def _direct_supported(directory: Path) -> bool:
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return writer_module._set_direct(fd, True)
    finally:
        os.close(fd)
        (directory / "probe").unlink()


@pytest.mark.parametrize("total", [0, 1, 4095, 4096, 4097, 3 * 16384, 3 * 16384 + 17, 100_003])
def test_output_is_exact_across_staging_buffers_and_partial_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, total: int
) -> None:
    monkeypatch.setattr(writer_module, "_STAGE_BYTES", 16384)  # many buffers, as a big file has
    direct = _direct_supported(tmp_path)
    data = bytes(i * 7 % 251 for i in range(total))
    target = tmp_path / "out.jsonl"
    sizes, start = itertools.cycle([1, 999, 5000, 20000]), 0
    with AtomicJsonlWriter(target) as writer:
        assert writer._fd is not None and _is_direct(writer._fd) == direct
        while start < total:
            end = min(start + next(sizes), total)
            writer.write(memoryview(data)[start:end])
            start = end
    assert target.read_bytes() == data and writer.bytes_written == total


def test_a_filesystem_that_refuses_direct_writes_gets_ordinary_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.fail("this test needs a filesystem with O_DIRECT (ext4, xfs, ...) for tmp_path")
    real_write = os.write
    refused = []

    def write(fd: int, data: memoryview) -> int:
        if _is_direct(fd):
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(writer_module, "_STAGE_BYTES", 16384)
    monkeypatch.setattr(writer_module.os, "write", write)
    data = b'{"a":"x"}\n' * 5000
    target = tmp_path / "out.jsonl"
    with AtomicJsonlWriter(target) as writer:
        writer.write(data)
    assert refused == [16384] and target.read_bytes() == data
