"""Atomic JSONL output: readers see either no file or the complete file, never a partial one."""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()
# Output is gathered in a staging buffer of this size and written a whole buffer at a time.
_STAGE_BYTES = 8 << 20
# O_DIRECT writes need block-aligned memory, sizes and offsets: 4 KiB suits 512-byte devices too.
_ALIGN = 4096
# Without O_DIRECT, start writing back every this many bytes: otherwise the final fsync writes the
# whole file to disk while the caller waits (0.25 s for 1 GB here).
_WRITEBACK_BYTES = 64 << 20


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for ``fd``; False where the platform or the filesystem has none."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    import fcntl  # not on Windows, which has no O_DIRECT either

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct if on else flags & ~direct)
    except OSError:  # e.g. tmpfs
        return False
    return on


class AtomicJsonlWriter:
    """Write to a temp file in the target's directory (same filesystem, so the rename is atomic),
    fsync it, then ``os.replace`` it onto the target. On an exception the temp file is deleted and
    the target is left untouched.

    Where the filesystem allows it, the file is written with O_DIRECT, from a page-aligned staging
    buffer: the data goes from that buffer to the disk instead of being copied into the page cache
    first. That copy, into pages the kernel had to find and zero, was up to a fifth of a Parquet
    conversion's CPU (perf); the output is read again only when it is uploaded or downloaded, from
    the disk like any file not recently used. The last partial block is written without O_DIRECT.
    Elsewhere the same buffer is written normally, and every ``_WRITEBACK_BYTES`` the kernel is
    asked to start writing back (``POSIX_FADV_DONTNEED`` starts writeback of dirty pages without
    waiting for it), so little is left for the final fsync.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._temp: Path | None = None
        self._direct = False
        self._stage: mmap.mmap | None = None
        self._view = memoryview(b"")
        self._staged = 0
        self.bytes_written = 0  # handed to ``write`` so far
        self._on_disk = 0  # written to the file so far
        self._written_back = 0  # without O_DIRECT: bytes before this offset have been handed to writeback

    def __enter__(self) -> AtomicJsonlWriter:
        self._fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._temp = Path(temp)
        self._direct = _set_direct(self._fd, True)
        self._stage = mmap.mmap(-1, _STAGE_BYTES)  # anonymous mappings are page-aligned
        self._view = memoryview(self._stage)
        return self

    def write_record(self, record: Any) -> None:
        """Compact UTF-8 JSON, non-ASCII characters written as themselves."""
        self.write(_ENCODER.encode(record) + b"\n")

    def write(self, data: bytes | memoryview) -> None:
        """Raw bytes that already hold complete lines."""
        assert self._fd is not None, "use the writer as a context manager"
        data = memoryview(data).cast("B")
        self.bytes_written += len(data)
        while len(data):
            size = min(len(data), _STAGE_BYTES - self._staged)
            self._view[self._staged : self._staged + size] = data[:size]
            self._staged += size
            data = data[size:]
            if self._staged == _STAGE_BYTES:
                self._write_staged(_STAGE_BYTES)

    def _write_staged(self, size: int) -> None:
        """Write the first ``size`` staged bytes to the file and keep the rest staged."""
        assert self._fd is not None
        pending = self._view[:size]
        while len(pending):
            try:
                pending = pending[os.write(self._fd, pending) :]
            except OSError as error:
                # A filesystem may accept the flag and refuse the writes: carry on without it.
                if error.errno != errno.EINVAL or not self._direct:
                    raise
                self._direct = _set_direct(self._fd, False)
        pending.release()
        self._on_disk += size
        rest = self._staged - size
        self._view[:rest] = self._view[size : self._staged]
        self._staged = rest
        if not self._direct and self._on_disk - self._written_back >= _WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        assert self._fd is not None
        if hasattr(os, "posix_fadvise"):  # not on macOS, where the final fsync does it all
            # Dirty pages are queued for writing and stay cached; only clean ones would be dropped.
            os.posix_fadvise(self._fd, self._written_back, self._on_disk - self._written_back, os.POSIX_FADV_DONTNEED)
        self._written_back = self._on_disk

    def _finish(self) -> None:
        assert self._fd is not None
        whole = self._staged - self._staged % _ALIGN if self._direct else self._staged
        self._write_staged(whole)
        if self._staged:  # less than a block: O_DIRECT cannot write it
            self._direct = _set_direct(self._fd, False)
            self._write_staged(self._staged)
        os.fsync(self._fd)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._fd is not None and self._temp is not None and self._stage is not None
        try:
            try:
                if kind is None:
                    self._finish()
            finally:
                os.close(self._fd)
                self._view.release()
                self._stage.close()
            if kind is None:
                os.replace(self._temp, self.path)
                _fsync_directory(self.path.parent)
        finally:
            self._temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open directories, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
