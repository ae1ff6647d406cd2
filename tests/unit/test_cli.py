from __future__ import annotations

import gc
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app, served_app
from finetune_service.settings import Settings


def _run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "FINETUNE_DATA_DIR": str(data_dir), **env}
    environment.pop("FINETUNE_API_KEYS", None)
    return subprocess.run(
        [sys.executable, "-m", "finetune_service", *args], capture_output=True, text=True, env=environment,
        timeout=60, check=False,
    )


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    result = _run(["serve", "--host", "0.0.0.0", "--port", "1"], tmp_path)
    assert result.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in result.stderr
    assert "FINETUNE_API_KEYS" in result.stderr


def test_serve_with_two_workers(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**os.environ, "FINETUNE_DATA_DIR": str(tmp_path), "FINETUNE_API_KEYS": "acme:k"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "finetune_service", "serve", "--port", str(port),
                                   "--workers", "2"], env=environment, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("Application startup complete") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        assert len(workers) == 2 and str(server.pid) not in workers
        for _ in range(4):
            answer = httpx.get(f"http://127.0.0.1:{port}/api/finetune/jobs", headers={"Authorization": "Bearer k"},
                               timeout=10)
            assert answer.status_code == 200 and answer.json()["total"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_refuses_fewer_than_one_worker(tmp_path: Path) -> None:
    result = _run(["serve", "--workers", "0"], tmp_path)
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr


def test_bad_configuration_is_reported_not_raised(tmp_path: Path) -> None:
    result = _run(["migrate"], tmp_path, FINETUNE_SYNC_INTERVAL="soon")
    assert result.returncode == 2
    assert "configuration error: FINETUNE_SYNC_INTERVAL must be a number" in result.stderr
    assert "Traceback" not in result.stderr


async def test_created_key_authenticates_and_is_stored_hashed(tmp_path: Path) -> None:
    result = _run(["keys", "create", "--tenant", "acme"], tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("fts_") and len(key) > 40
    assert key.encode() not in (tmp_path / "finetune.db").read_bytes()
    app = create_app(Settings(data_dir=tmp_path))
    async with AsyncTestClient(app) as client:
        assert (await client.get("/api/finetune/providers")).status_code == 401
        ok = await client.get("/api/finetune/providers", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        wrong = await client.get("/api/finetune/providers", headers={"Authorization": f"Bearer {key}x"})
        assert wrong.status_code == 401


def test_migrate_creates_schema(tmp_path: Path) -> None:
    result = _run(["migrate"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "latest migration" in result.stdout
    assert (tmp_path / "finetune.db").exists()


def test_convert_writes_each_split_part_and_a_report(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "sample_data" / "support_qa.csv"
    result = _run(["convert", str(sample), "-o", str(tmp_path / "out.jsonl"), "--split", "train=0.8,validation=0.2",
                   "--strategy", "final_and_intermediate_r1_compatible", "--system", "Be brief.",
                   "--report", str(tmp_path / "report.json")], tmp_path)
    assert result.returncode == 0, result.stderr
    train = (tmp_path / "out.train.jsonl").read_text().splitlines()
    validation = (tmp_path / "out.validation.jsonl").read_text().splitlines()
    assert len(train) + len(validation) == 30 and not set(train) & set(validation)
    first = json.loads(train[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first["messages"][-1]["content"].startswith("<think>\n")
    assert f"{len(train)} lines written" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["validation"]["row_count"] == 30
    assert report["conversion"]["outputs"][str(tmp_path / "out.train.jsonl")]["rows_written"] == len(train)


def test_convert_explains_bad_input_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    result = _run(["convert", str(bad), "-o", str(tmp_path / "o.jsonl")], tmp_path)
    assert result.returncode == 2
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
    wrong = _run(["convert", str(bad), "-o", str(tmp_path / "o.jsonl"), "--format", "csv"], tmp_path)
    assert wrong.returncode == 2 and "csv" in wrong.stderr


async def test_the_served_app_freezes_what_start_up_built_and_the_test_app_does_not(tmp_path: Path) -> None:
    gc.unfreeze()
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        async with AsyncTestClient(create_app(Settings(data_dir=tmp_path / "a"))) as client:
            assert (await client.get("/health")).status_code == 200
            assert gc.get_freeze_count() == 0
            assert pa.default_memory_pool().backend_name == "system"
        async with AsyncTestClient(served_app(Settings(data_dir=tmp_path / "b"))) as client:
            assert (await client.get("/health")).status_code == 200
            assert gc.get_freeze_count() > 100_000
            assert pa.default_memory_pool().backend_name == "jemalloc"  # dataset_formats.memory_pool
    finally:
        gc.unfreeze()
        pa.set_memory_pool(pool)
