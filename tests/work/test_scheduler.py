"""The scheduler worker: a failing ticket job is logged once, with its own traceback,
the jobs after it still run, and /healthz names it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from maildesk.work import scheduler as scheduler_module
from maildesk.work.scheduler import Scheduler, ticket_jobs


def test_a_failing_ticket_job_is_logged_once_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def scan_sla(engine: Any, runtime: Any) -> None:
        ran.append("scan_sla")
        raise ValueError("the sla table is locked")

    def return_pending(engine: Any, runtime: Any) -> None:
        ran.append("return_pending")

    monkeypatch.setattr(scheduler_module, "TICKET_JOBS", (scan_sla, return_pending))

    async def main() -> dict[str, Any]:
        scheduler = Scheduler()
        scheduler.every(0.05, "ticket-jobs", ticket_jobs(None, lambda: None))  # type: ignore[arg-type]
        scheduler.start()
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                if scheduler.health()["jobs"]["ticket-jobs"]["last_error"]:
                    break
        finally:
            await scheduler.stop()
        return scheduler.health()

    with caplog.at_level(logging.ERROR):
        health = asyncio.run(main())
    assert ran[:2] == ["scan_sla", "return_pending"]
    assert health["jobs"]["ticket-jobs"]["last_error"] == "JobsFailed: failed: scan_sla"
    assert health["state"] == "failing"
    runs = ran.count("scan_sla")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == runs, [r.getMessage() for r in errors]  # one line per failure
    assert all("scan_sla failed" in r.getMessage() for r in errors)
    assert all(r.exc_info and r.exc_info[0] is ValueError for r in errors)
