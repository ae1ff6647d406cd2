"""Benchmark: many dashboards polling jobs with ETags while the scheduler syncs active jobs.

Usage:  python benchmarks/bench_load.py [--clients 200] [--duration 60] [--jobs 1000] [--rate 2000]
                                        [--backend sqlite|postgresql|both] [--processes 2]
                                        [--sync-interval 30] [--list-share 0.2] [--warmup 5]

Setup: the service runs as `python -m finetune_service serve` subprocess(es) on loopback with
FINETUNE_RATE_LIMIT=0, FINETUNE_SYNC_INTERVAL=<sync-interval> and a Sandbox step of an hour, so
every job created stays active (the Sandbox keeps it in its first stage) and the scheduler keeps
syncing all of them: each sync reads the Sandbox job and its events, writes the record and bumps
its version (so its ETag changes). `--jobs` jobs are created through the API first. The default
sync interval is the service's own (30 s); a shorter one is a heavier, less realistic load (each
sync costs ~3.7 ms of CPU on SQLite, so 1,000 jobs every 3 s alone would take more than a core).

Load: `--clients` dashboard clients, each one raw HTTP/1.1 keep-alive connection opened before the
window starts (asyncio streams; no HTTP library, so the generator stays cheap next to the service
on 2 cores), each polling at
`--rate / --clients` requests per second (open loop, evenly spaced, random phase): with
probability `--list-share` the job list (`GET /api/finetune/jobs?limit=50`), otherwise one
job's details (`GET /api/finetune/jobs/{id}`), always sending the ETag it last got for that URL
in If-None-Match. With several service processes the clients are spread round-robin over them.
Latency = request written -> response fully read, on the client.

Lost updates: an active job whose record the scheduler did not sync even once during the load
window, i.e. whose `updated_at` at the end of the window equals its `updated_at` at the start
(with a sync interval of S seconds and a window of D seconds each job should be synced about
D/S times). Also printed: the age of each job's last sync at the end of the window.

`--processes` service processes (each on its own port, clients spread round-robin) share the
database and one data folder. PostgreSQL: a throwaway database on 127.0.0.1:5432 (user postgres),
created and dropped by this script. Also printed: the three seconds of the window with the worst
p99, to tell a steady tail from a stall.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-load-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PG_ADMIN = os.environ.get("FINETUNE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    clients: int = 200
    duration: float = 60.0
    jobs: int = 1000
    rate: float = 2000.0
    backend: str = "sqlite"
    processes: int = 1
    sync_interval: float = 3.0
    list_share: float = 0.2
    warmup: float = 5.0
    quiet: bool = False


@dataclass
class Result:
    backend: str
    processes: int
    clients: int
    duration: float
    requests: int = 0
    ok: int = 0
    not_modified: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # seconds into the window, one per latency
    warmup: float = 0.0
    warmup_latencies: list[float] = field(default_factory=list)
    jobs: int = 0
    lost_updates: int = 0
    finished_jobs: int = 0
    sync_age: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    service_cpu: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    def percentile(self, q: float, latencies: list[float] | None = None) -> float:
        ordered = sorted(self.latencies if latencies is None else latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def worst_seconds(self, count: int = 3) -> list[tuple[int, float]]:
        """(second of the window, p99 latency in ms of the requests sent in it), worst first."""
        by_second: dict[int, list[float]] = {}
        for sent, latency in zip(self.sent_at, self.latencies, strict=True):
            by_second.setdefault(int(sent), []).append(latency)
        p99 = {second: sorted(values)[int(0.99 * (len(values) - 1))] * 1000 for second, values in by_second.items()}
        return sorted(p99.items(), key=lambda item: -item[1])[:count]

    def report(self) -> str:
        age = sorted(self.sync_age)
        lines = [
            f"backend: {self.backend}, {self.processes} service process(es), {self.clients} clients, "
            f"{self.duration:.0f} s window, {self.jobs} active jobs (setup {self.setup_seconds:.1f} s)",
            f"  requests      {self.requests} ({self.rps:,.0f} req/s)",
            f"  latency       p50 {self.percentile(0.50):.2f} ms   p90 {self.percentile(0.90):.2f} ms   "
            f"p99 {self.percentile(0.99):.2f} ms   max {self.percentile(1.0):.2f} ms",
            "  worst seconds " + ", ".join(f"{second} s: p99 {ms:.0f} ms" for second, ms in self.worst_seconds()),
            f"  warm-up       {self.warmup:.0f} s before the window, not counted above: "
            f"{len(self.warmup_latencies)} requests, p50 {self.percentile(0.5, self.warmup_latencies):.2f} ms, "
            f"p99 {self.percentile(0.99, self.warmup_latencies):.2f} ms, "
            f"max {self.percentile(1.0, self.warmup_latencies):.2f} ms",
            f"  answers       200: {self.ok}   304: {self.not_modified} "
            f"({100 * self.not_modified / max(1, self.requests):.1f}%)   errors: {self.errors} "
            f"{dict(self.error_kinds) if self.error_kinds else ''}",
            f"  lost updates  {self.lost_updates} of {self.jobs} active jobs not synced once during the window"
            f" ({self.finished_jobs} finished meanwhile)",
            f"  sync age      at the end: p50 {statistics.median(age) if age else float('nan'):.1f} s, "
            f"max {age[-1] if age else float('nan'):.1f} s since each job's last sync",
            f"  CPU           load generator {self.client_cpu:.0%} of one core; service "
            + ", ".join(f"{c:.0%}" for c in self.service_cpu) + " of one core each",
        ]
        return "\n".join(lines)


# --- a minimal HTTP/1.1 keep-alive client --------------------------------------------------------

class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, path: str, etag: str | None) -> tuple[int, str | None, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {KEY}\r\n"
                          f"{extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers.get("etag"), body


# --- services ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@contextmanager
def postgres_database() -> Iterator[str]:
    import asyncpg

    name = f"bench_load_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def services(config: Config, data_dir: Path, database_url: str | None) -> Iterator[list[tuple[str, int]]]:
    env = {**os.environ, "FINETUNE_DATA_DIR": str(data_dir), "FINETUNE_API_KEYS": f"bench:{KEY}",
           "FINETUNE_RATE_LIMIT": "0", "FINETUNE_SYNC_INTERVAL": str(config.sync_interval),
           "FINETUNE_SANDBOX_STEP_SECONDS": "3600", "PYTHONPATH": str(ROOT)}
    if database_url:
        env["FINETUNE_DATABASE_URL"] = database_url
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    # The services' logs go to a file: a pipe nobody reads fills up and blocks the service.
    log = (data_dir / "service.log").open("wb")
    try:
        for _ in range(config.processes):  # one after the other: the first applies the migrations
            port = free_port()
            process = subprocess.Popen([sys.executable, "-m", "finetune_service", "serve", "--port", str(port)],
                                       env=env, cwd=data_dir, stdout=subprocess.DEVNULL, stderr=log)
            started.append((process, port))
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start: {(data_dir / 'service.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield [(f"http://127.0.0.1:{port}", process.pid) for process, port in started]
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.terminate()
        for process, _ in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


# --- setup and measurement -----------------------------------------------------------------------

async def create_jobs(base: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as client:
        with (ROOT / "sample_data" / "support_qa.csv").open("rb") as handle:
            uploaded = await client.post("/api/finetune/upload-dataset", files={"file": ("qa.csv", handle)})
        uploaded.raise_for_status()
        dataset = uploaded.json()["path"]
        body = {"name": "bench", "provider": "SANDBOX", "model_name": "sandbox-chat-small", "dataset_path": dataset}
        ids: list[str] = []
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with gate:
                response = await client.post("/api/finetune/jobs", json={**body, "name": f"bench-{i}"},
                                             headers={"Idempotency-Key": f"bench-{i}"})
                response.raise_for_status()
                ids.append(response.json()["job"]["id"])

        await asyncio.gather(*(one(i) for i in range(count)))
        return ids


async def job_states(base: str) -> dict[str, tuple[str, str]]:
    """{job id: (updated_at, status)} for every job, read through the API."""
    states: dict[str, tuple[str, str]] = {}
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as client:
        after = None
        while True:
            page = (await client.get("/api/finetune/jobs", params={"limit": 500, **({"after": after} if after
                                                                                    else {})})).json()
            for job in page["jobs"]:
                states[job["id"]] = (job["updated_at"], job["status"])
            if not page["has_more"]:
                return states
            after = page["next_cursor"]


async def dashboard(connection: Connection, job_ids: list[str], config: Config, until: float, result: Result,
                    seed: int) -> None:
    """Polls until `until`; what it sends before the window (the warm-up) is kept apart."""
    window_start = until - config.duration
    rng = random.Random(seed)
    interval = config.clients / config.rate
    etags: dict[str, str] = {}
    next_at = time.perf_counter() + rng.uniform(0, interval)
    try:
        while True:
            now = time.perf_counter()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            if time.perf_counter() >= until:
                return
            next_at = max(next_at + interval, time.perf_counter() - interval)
            path = ("/api/finetune/jobs?limit=50" if rng.random() < config.list_share
                    else f"/api/finetune/jobs/{rng.choice(job_ids)}")
            started = time.perf_counter()
            try:
                status, etag, _ = await connection.get(path, etags.get(path))
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                connection.close()
                if started < window_start:
                    continue
                result.requests += 1
                result.errors += 1
                result.error_kinds[type(error).__name__] += 1
                continue
            if etag:
                etags[path] = etag
            if started < window_start:
                result.warmup_latencies.append(time.perf_counter() - started)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.sent_at.append(started - window_start)
            result.requests += 1
            if status == 200:
                result.ok += 1
            elif status == 304:
                result.not_modified += 1
            else:
                result.errors += 1
                result.error_kinds[str(status)] += 1
    finally:
        connection.close()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def measure(config: Config, bases: list[tuple[str, int]], result: Result) -> None:
    setup = time.perf_counter()
    job_ids = await create_jobs(bases[0][0], config.jobs)
    result.setup_seconds = time.perf_counter() - setup
    result.jobs = len(job_ids)
    # Let the first sync pass over the new jobs settle before the window opens.
    await asyncio.sleep(min(config.sync_interval, 5.0))
    targets = [(base.removeprefix("http://").split(":")[0], int(base.rsplit(":", 1)[1])) for base, _ in bases]
    # Dashboards keep their connection open; connecting 200 at once is not what is measured.
    connections = [Connection(*targets[i % len(targets)]) for i in range(config.clients)]
    await asyncio.gather(*(connection.open() for connection in connections))
    # Dashboards have been polling before anyone measures: the warm-up fills the view caches of every
    # process and grows the connection pools, and is reported apart.
    result.warmup = config.warmup
    until = time.perf_counter() + config.warmup + config.duration
    polling = [asyncio.ensure_future(dashboard(connection, job_ids, config, until, result, seed=i))
               for i, connection in enumerate(connections)]
    await asyncio.sleep(config.warmup)
    before = await job_states(bases[0][0])
    cpu_before = [cpu_seconds(pid) for _, pid in bases]
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    await asyncio.gather(*polling)
    elapsed = time.perf_counter() - wall
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu = (own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime) / elapsed
    result.service_cpu = [(cpu_seconds(pid) - c) / elapsed for (_, pid), c in zip(bases, cpu_before, strict=True)]
    result.duration = elapsed
    end = time.time()
    after = await job_states(bases[0][0])
    for job_id in job_ids:
        updated_before, _ = before[job_id]
        updated_after, status_after = after[job_id]
        if status_after in ("succeeded", "failed", "cancelled"):
            result.finished_jobs += 1
            continue
        if updated_after == updated_before:
            result.lost_updates += 1
        result.sync_age.append(end - _ts(updated_after))


def run(config: Config) -> Result:
    result = Result(backend=config.backend, processes=config.processes, clients=config.clients,
                    duration=config.duration)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        data_dir = Path(scratch)
        if config.backend == "postgresql":
            with postgres_database() as url, services(config, data_dir, url) as bases:
                asyncio.run(measure(config, bases, result))
        else:
            with services(config, data_dir, None) as bases:
                asyncio.run(measure(config, bases, result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--jobs", type=int, default=1000, help="active jobs the scheduler keeps syncing")
    parser.add_argument("--rate", type=float, default=2000.0, help="target requests per second, all clients")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--processes", type=int, default=2, help="service processes (one per core)")
    parser.add_argument("--sync-interval", type=float, default=30.0, help="FINETUNE_SYNC_INTERVAL (its default)")
    parser.add_argument("--list-share", type=float, default=0.2, help="share of requests that list jobs")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of polling before the window")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"bench_load: {os.cpu_count()} cores, target {args.rate:,.0f} req/s, "
          f"FINETUNE_SYNC_INTERVAL={args.sync_interval:g}", flush=True)
    for backend in backends:
        config = Config(clients=args.clients, duration=args.duration, jobs=args.jobs, rate=args.rate,
                        backend=backend, processes=args.processes,
                        sync_interval=args.sync_interval, list_share=args.list_share, warmup=args.warmup)
        print(run(config).report(), flush=True)


if __name__ == "__main__":
    main()
