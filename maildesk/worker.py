"""The one shape of every long-running part of the daemon: the pipeline, the outbox
sender, the spam learner, each IMAP poller and the scheduler.

A worker runs `run_once` whenever it is woken, and at the latest every
`idle_seconds`; a failing round is logged and retried, never fatal. `start` puts
it on the running loop, `stop` ends it within a grace time, and `health` is what
/healthz shows for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # after a failed round, before the next one


class Worker:
    """Subclasses implement `run_once` (or, with a loop of their own, `run_forever`)."""

    name = "worker"
    idle_seconds = 5.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.failures = 0  # rounds failed in a row

    def wake(self) -> None:
        """Run a round now (ends the idle wait); safe to call from the loop's thread."""
        self._wake.set()

    async def run_once(self) -> None:
        raise NotImplementedError

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception as exc:
                self.failed(exc)
                await asyncio.sleep(RETRY_SECONDS)
            else:
                self.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_seconds)

    def succeeded(self) -> None:
        self.last_success = datetime.now(UTC)
        self.failures = 0

    def failed(self, exc: BaseException, logged: bool = False) -> None:
        """Count the failure for /healthz; `logged`: whoever raised it logged it already."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if not logged:
            log.error("%s: round failed (retrying shortly): %s", self.name, self.last_error,
                      exc_info=exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run_forever(), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace: float = 2.0) -> None:
        """End the loop: cancelled, then `abort` if it is stuck past `grace`, then `close`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            _done, pending = await asyncio.wait([task], timeout=grace)
            if pending:
                self.abort()
                await asyncio.wait(pending, timeout=grace)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s: stopped with %r", self.name, task.exception())
        await asyncio.to_thread(self.close)

    def abort(self) -> None:
        """Unblock a round stuck in blocking IO (e.g. cut a socket); nothing by default."""

    def close(self) -> None:
        """Release threads and connections once the loop has ended; nothing by default."""

    def health(self) -> dict[str, Any]:
        return {
            "state": "failing" if self.failures else ("running" if self.running else "stopped"),
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
        }
