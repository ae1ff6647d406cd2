"""`finetune-service serve` as a real process on a free port, for tests that kill it or read its output."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.emulators.server import free_port

KEY = "kill-test-key"


@contextmanager
def service(
    data_dir: Path, stdout: int = subprocess.DEVNULL, **env: str,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environment = {**os.environ, "FINETUNE_DATA_DIR": str(data_dir), "FINETUNE_API_KEYS": f"acme:{KEY}",
                   "FINETUNE_SYNC_INTERVAL": "0", "FINETUNE_RATE_LIMIT": "0", **env}
    process = subprocess.Popen([sys.executable, "-m", "finetune_service", "serve", "--port", str(port)],
                               env=environment, stdout=stdout, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
