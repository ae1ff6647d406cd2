"""kill -9 the service mid-upload, mid-conversion and mid-create; restart; nothing is lost or doubled."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.emulators.server import serve_in_thread
from tests.emulators.together import create_together_emulator
from tests.service_process import KEY, service

AUTH = {"Authorization": f"Bearer {KEY}"}
TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


def visible_files(root: Path) -> list[Path]:
    """What a reader could take for data: every file except the atomic writer's hidden temp files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def test_kill_during_upload_leaves_no_dataset(tmp_path: Path) -> None:
    with service(tmp_path) as (url, process):
        def slow_body() -> Iterator[bytes]:
            boundary_head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
                             b"Content-Type: text/csv\r\n\r\nquestion,answer\r\n")
            yield boundary_head
            for i in range(200):
                if i == 20:
                    os.kill(process.pid, signal.SIGKILL)
                yield f"q{i},a{i}\r\n".encode() * 2000
                time.sleep(0.01)

        with contextlib.suppress(httpx.TransportError):
            httpx.post(f"{url}/api/finetune/upload-dataset", content=slow_body(), headers={
                **AUTH, "Content-Type": "multipart/form-data; boundary=b"}, timeout=30)
        assert process.wait(timeout=10) == -signal.SIGKILL
    with service(tmp_path) as (url, _):
        assert httpx.get(f"{url}/api/finetune/datasets", headers=AUTH).json()["datasets"] == []
    assert visible_files(tmp_path / "datasets") == []
    assert list((tmp_path / "datasets").rglob("*.tmp")) == []


def test_kill_during_conversion_leaves_no_half_output(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("w") as handle:
        handle.write("question,answer\n")
        for i in range(300_000):
            handle.write(f'"question {i}, with ""quotes""","answer {i} ' + "x" * 80 + '"\n')
    with service(tmp_path / "data") as (url, process):
        with big.open("rb") as upload:
            dataset = httpx.post(f"{url}/api/finetune/upload-dataset", files={"file": ("big.csv", upload)},
                                 headers=AUTH, timeout=120).json()["path"]
        outputs = tmp_path / "data" / "datasets"

        half_written: list[Path] = []

        def kill_once_writing() -> None:
            # Kill the moment the atomic writer's temp file exists: the conversion is mid-way.
            deadline = time.monotonic() + 30
            while not half_written and time.monotonic() < deadline:
                half_written.extend(outputs.rglob(".*.tmp"))
                time.sleep(0.002)
            os.kill(process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_writing)
        killer.start()
        with contextlib.suppress(httpx.TransportError):
            httpx.post(f"{url}/api/finetune/format-dataset", json={"dataset_path": dataset, "split_name": "all"},
                       headers=AUTH, timeout=60)
        killer.join()
        assert process.wait(timeout=10) == -signal.SIGKILL
    assert half_written, "the conversion never started writing before the kill"
    assert [p for p in visible_files(outputs) if p.suffix == ".jsonl"] == []
    with service(tmp_path / "data") as (url, _):
        response = httpx.post(f"{url}/api/finetune/format-dataset", json={"dataset_path": dataset,
                                                                          "split_name": "all"},
                              headers=AUTH, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["output"]["rows_written"] == 300_000
    assert list(outputs.rglob("*.tmp")) == []
    assert rows(tmp_path / "data" / "finetune.db", "select count(*) from dataset_outputs") == [(1,)]


def test_kill_during_job_creation_recovers_without_a_second_paid_job(tmp_path: Path) -> None:
    emulator = create_together_emulator(step_seconds=0.05)
    emulator.faults.add("POST", r"^/v1/fine-tunes$", delay=2.0)
    with serve_in_thread(emulator.app) as together_url:
        env = {"TOGETHER_API_KEY": emulator.api_key, "TOGETHER_BASE_URL": together_url}
        with service(tmp_path, **env) as (url, process):
            dataset = httpx.post(f"{url}/api/finetune/upload-dataset", headers=AUTH, files={
                "file": ("qa.csv", (REPO / "sample_data" / "support_qa.csv").read_bytes())}).json()["path"]
            def kill_once_create_is_sent() -> None:
                # Kill while the provider is still answering the create: the job exists there, not here.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(
                        r[0] == "POST" and r[1] == "/v1/fine-tunes" for r in list(emulator.requests)):
                    time.sleep(0.01)
                os.kill(process.pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_once_create_is_sent)
            killer.start()
            with contextlib.suppress(httpx.TransportError):
                httpx.post(f"{url}/api/finetune/jobs", headers=AUTH, timeout=30, json={
                    "name": "paid", "provider": "TOGETHER_AI", "model_name": TOGETHER_MODEL, "dataset_path": dataset})
            killer.join()
            assert process.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 10  # the emulator finishes the create the dead process asked for
        while not emulator.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(emulator.jobs) == 1
        db = tmp_path / "finetune.db"
        assert rows(db, "select status, provider_job_id from jobs") == [("creating", None)]
        # The dead process held the job's lease; let it lapse as it would after the lease time.
        with sqlite3.connect(db) as conn:
            conn.execute("update jobs set lease_until = '2000-01-01 00:00:00'")
        with service(tmp_path, FINETUNE_SYNC_INTERVAL="0.2", **env) as (url, _):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                job = httpx.get(f"{url}/api/finetune/jobs", headers=AUTH).json()["jobs"][0]
                if job["status"] == "succeeded":
                    break
                time.sleep(0.2)
        assert job["status"] == "succeeded" and job["provider_job_id"] in emulator.jobs
        assert len(emulator.jobs) == 1
        creates = [r for r in emulator.requests if r[0] == "POST" and r[1] == "/v1/fine-tunes"]
        assert len(creates) == 1
