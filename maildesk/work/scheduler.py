"""The scheduler worker: APScheduler runs the periodic jobs (the SLA scan and the other
ticket jobs, systemd's status line) on the daemon's loop; each job's last run and last
failure show in /healthz, and a failing job never stops the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from maildesk.config.runtime import Runtime
from maildesk.work.slascan import TICKET_JOBS
from maildesk.worker import Worker

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class JobsFailed(Exception):
    """Some of a run's jobs failed; each was logged, with its traceback, as it failed."""


class Scheduler(Worker):
    name = "scheduler"

    def __init__(self) -> None:
        super().__init__()
        self._jobs: list[tuple[str, float, Job]] = []
        self._last: dict[str, dict[str, str | None]] = {}
        self._aps: AsyncIOScheduler | None = None

    def every(self, seconds: float, name: str, job: Job) -> None:
        """Run `job` every `seconds` (one run at a time; runs missed while busy coalesce)."""
        self._jobs.append((name, seconds, job))
        self._last[name] = {"last_success": None, "last_error": None}

    def start(self) -> None:
        self._aps = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        for name, seconds, job in self._jobs:
            self._aps.add_job(self._recorded(name, job), "interval", seconds=seconds, id=name,
                              max_instances=1, coalesce=True)
        self._aps.start()

    @property
    def running(self) -> bool:
        return self._aps is not None and bool(self._aps.running)

    async def stop(self, grace: float = 2.0) -> None:
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=False)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "jobs": self._last}

    def _recorded(self, name: str, job: Job) -> Job:
        async def run() -> None:
            try:
                await job()
            except Exception as exc:  # the next run comes; the others run meanwhile
                self.failed(exc, logged=isinstance(exc, JobsFailed))
                self._last[name]["last_error"] = self.last_error
            else:
                self.succeeded()
                self._last[name]["last_success"] = datetime.now(UTC).isoformat()

        return run


def ticket_jobs(engine: Engine, runtime: Callable[[], Runtime]) -> Job:
    """SLA reminders, the unassigned digest, postponed and resolved tickets: one job
    after the other, each in a thread; one failing does not skip the rest."""

    async def run() -> None:
        failed: list[str] = []
        for job in TICKET_JOBS:
            try:
                await asyncio.to_thread(job, engine, runtime())
            except Exception:
                log.exception("scheduler: %s failed; it runs again shortly", job.__name__)
                failed.append(job.__name__)
        if failed:
            raise JobsFailed(f"failed: {', '.join(failed)}")

    return run
