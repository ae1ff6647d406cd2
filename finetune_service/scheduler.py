"""APScheduler in the app lifespan: every tick syncs the unfinished jobs that are due."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from finetune_service.services.sync import JobSync

log = logging.getLogger(__name__)


async def _tick(sync: JobSync) -> None:
    try:
        report = await sync.tick()
    except Exception:
        # A tick that fails (database briefly away) must not stop later ticks.
        log.exception("scheduler tick failed")
        return
    if report.claimed:
        log.info("synced %d jobs (%d failed, backing off)", report.synced, report.failed)


def start_scheduler(sync: JobSync, interval_seconds: float) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    # The first tick runs at once, so jobs left `creating` by a crash are recovered on start.
    scheduler.add_job(
        _tick, "interval", args=[sync], seconds=interval_seconds, id="sync-jobs", max_instances=1,
        coalesce=True, next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return scheduler
