"""The dataset file store: opaque ids in, paths out; never a path a client sent.

Files live under `<data dir>/datasets/<tenant digest>/<dataset id>/`: the original upload
and the formatted outputs made from it. Everything is written to a staging file on the
same filesystem and renamed into place, so a crash never leaves a half file that looks
whole. This is the one interface an object store would replace.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from finetune_service.errors import NotFound, PayloadTooLarge

_ID = re.compile(r"^(ds|out)_[0-9a-f]{24}$")


def is_store_id(value: str) -> bool:
    return bool(_ID.match(value))


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    bytes: int
    sha256: str


class DatasetStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / ".staging"

    def _tenant_dir(self, tenant_id: str) -> Path:
        # Tenant names are free text; a digest keeps them out of the path entirely.
        return self.root / hashlib.sha256(tenant_id.encode()).hexdigest()[:32]

    def dataset_dir(self, tenant_id: str, dataset_id: str) -> Path:
        if not is_store_id(dataset_id):
            raise NotFound(f"Dataset {dataset_id!r} does not exist", param="dataset_id")
        return self._tenant_dir(tenant_id) / dataset_id

    def original_path(self, tenant_id: str, dataset_id: str, file_type: str) -> Path:
        return self.dataset_dir(tenant_id, dataset_id) / f"original.{file_type}"

    def output_path(self, tenant_id: str, dataset_id: str, output_id: str) -> Path:
        if not is_store_id(output_id):
            raise NotFound(f"Dataset output {output_id!r} does not exist", param="output_id")
        return self.dataset_dir(tenant_id, dataset_id) / "outputs" / f"{output_id}.jsonl"

    @contextmanager
    def staged(self, suffix: str = "") -> Iterator[Path]:
        """A fresh staging path; removed afterwards unless it was moved into place."""
        self.staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.staging, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def receive(self, chunks: AsyncIterator[bytes], target: Path, max_bytes: int) -> StoredUpload:
        """Stream `chunks` into `target` (a staging path), enforcing the size limit."""
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"The upload is larger than the limit of {max_bytes} bytes "
                        "(FINETUNE_MAX_UPLOAD_BYTES); split the file or ask the operator to raise the limit."
                    )
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        return StoredUpload(path=target, bytes=size, sha256=digest.hexdigest())

    @staticmethod
    def publish(staged: Path, final: Path) -> None:
        """Move a complete staged file into place atomically (same filesystem)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    def delete_dataset(self, tenant_id: str, dataset_id: str) -> None:
        shutil.rmtree(self.dataset_dir(tenant_id, dataset_id), ignore_errors=True)

    def clear_staging(self) -> None:
        """Staging files and the atomic writer's temp files left by a crash are incomplete by
        definition (they were never renamed into place); remove them on start."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.root.exists():
            for leftover in self.root.rglob(".*.tmp"):
                leftover.unlink(missing_ok=True)
