"""Atomic JSONL output: readers see either no file or the complete file, never a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import msgspec

_ENCODER = msgspec.json.Encoder()
# Start writing back every this many bytes: without it the final fsync writes the whole file to
# disk while the caller waits (0.25 s for 1 GB here), instead of overlapping with the conversion.
_WRITEBACK_BYTES = 64 << 20


class AtomicJsonlWriter:
    """Write to a temp file in the target's directory (same filesystem, so the rename is atomic),
    fsync it, then ``os.replace`` it onto the target. On an exception the temp file is deleted and
    the target is left untouched.

    Every ``_WRITEBACK_BYTES`` the data written so far is handed to the kernel for writing back
    (``POSIX_FADV_DONTNEED`` starts writeback of dirty pages without waiting for it), so little
    is left for the final fsync.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._temp: Path | None = None
        self.bytes_written = 0
        self._written_back = 0  # bytes before this offset have been handed to writeback

    def __enter__(self) -> AtomicJsonlWriter:
        handle, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._temp = Path(temp)
        # Small buffer: the large chunks of the fast path bypass it instead of being copied into it.
        self._file = os.fdopen(handle, "wb", buffering=1 << 16)
        return self

    def write_record(self, record: Any) -> None:
        """Compact UTF-8 JSON, non-ASCII characters written as themselves."""
        self.write(_ENCODER.encode(record) + b"\n")

    def write(self, data: bytes | memoryview) -> None:
        """Raw bytes that already hold complete lines."""
        assert self._file is not None, "use the writer as a context manager"
        self._file.write(data)
        self.bytes_written += len(data)
        if self.bytes_written - self._written_back >= _WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        assert self._file is not None
        if hasattr(os, "posix_fadvise"):  # not on macOS, where the final fsync does it all
            self._file.flush()
            length = self.bytes_written - self._written_back
            # Dirty pages are queued for writing and stay cached; only clean ones would be dropped.
            os.posix_fadvise(self._file.fileno(), self._written_back, length, os.POSIX_FADV_DONTNEED)
        self._written_back = self.bytes_written

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._file is not None and self._temp is not None
        try:
            try:
                if kind is None:
                    self._file.flush()
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
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
