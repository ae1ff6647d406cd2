"""APScheduler in the app lifespan: every tick syncs the unfinished jobs that are due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from finetune_service.services.sync import JobSync

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0
# Each job is due on its own clock (`next_sync_at`, one sync interval after its last sync), so a
# tick only picks up the jobs due by then. Ticking every second, not once per interval, spreads the
# syncs evenly over the interval instead of bunching them into one burst (which also stalled
# dashboards), and a job is never more than a second late.
MAX_TICK_SECONDS = 1.0


class SyncScheduler:
    """Runs `JobSync.tick` every second (or every `interval_seconds` if shorter); `stop()` waits for
    a tick in flight, so the database is never closed under a running sync."""

    def __init__(self, sync: JobSync, interval_seconds: float) -> None:
        self._sync = sync
        self._running: asyncio.Task[None] | None = None
        self._scheduler = AsyncIOScheduler()
        # The first tick runs at once, so jobs left `creating` by a crash are recovered on start.
        self._scheduler.add_job(
            self._tick, "interval", seconds=min(interval_seconds, MAX_TICK_SECONDS), id="sync-jobs",
            max_instances=1, coalesce=True, next_run_time=datetime.now(UTC),
        )

    def start(self) -> None:
        self._scheduler.start()

    async def _tick(self) -> None:
        self._running = asyncio.current_task()
        try:
            report = await self._sync.tick()
        except Exception:
            # A tick that fails (database briefly away) must not stop later ticks.
            log.exception("scheduler tick failed")
            return
        finally:
            self._running = None
        if report.claimed:
            log.info("synced %d jobs (%d failed, backing off)", report.synced, report.failed)

    async def stop(self) -> None:
        self._scheduler.shutdown(wait=False)
        running = self._running
        if running is not None and not running.done():
            try:
                await asyncio.wait_for(asyncio.shield(running), STOP_GRACE_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running
