"""A job never moves backwards, whatever order provider answers arrive in."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from finetune_service.db.engine import Database
from finetune_service.db.migrate import upgrade
from finetune_service.db.tables import Job, JobEvent
from finetune_service.errors import ProviderError
from finetune_service.providers.base import JobStatus, ProviderJob
from finetune_service.services.job_state import apply_provider_job, backoff_seconds, record_failure


async def test_stale_answers_never_move_a_job_back(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(database)
    job = Job(tenant_id="t", name="j", provider="SANDBOX", base_model="m", split_name="train",
              format_type="openai_chat_jsonl", data_strategy="final_only", status="creating")
    async with database.session() as session:
        session.add(job)
        await session.flush()
        for status in (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.RUNNING):
            remote = ProviderJob(id="p1", status=status, raw_status=status.value, model="m",
                                 fine_tuned_model="m-ft" if status is JobStatus.SUCCEEDED else None,
                                 progress=100.0 if status is JobStatus.SUCCEEDED else 10.0)
            await apply_provider_job(session, job, remote, [], sync_interval=30)
        assert job.status == "succeeded" and job.progress == 100.0 and job.fine_tuned_model == "m-ft"
        assert job.next_sync_at is None
        await session.flush()
        events = list((await session.execute(select(JobEvent).where(JobEvent.job_id == job.id))).scalars())
    assert [(e.status_from, e.status_to) for e in events] == [("creating", "running"), ("running", "succeeded")]
    await database.dispose()


async def test_failures_back_off_exponentially_and_honour_retry_after(tmp_path: Path) -> None:
    assert 0.5 <= backoff_seconds(1) <= 1.0
    assert 4.0 <= backoff_seconds(4) <= 8.0
    assert backoff_seconds(30) <= 300.0
    assert backoff_seconds(1, retry_after=42.0) == 42.0
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(database)
    job = Job(tenant_id="t", name="j", provider="SANDBOX", base_model="m", split_name="train",
              format_type="openai_chat_jsonl", data_strategy="final_only", status="running")
    async with database.session() as session:
        session.add(job)
        await session.flush()
        delays = [await record_failure(session, job, ProviderError("busy", provider="x", status=429,
                                                                   retryable=True), "Syncing") for _ in range(3)]
    assert job.sync_failures == 3 and job.status == "running"
    assert delays[2] >= 2.0
    await database.dispose()
