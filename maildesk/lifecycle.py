"""Signals from the first instant of `maildesk run` (kept light: imported before the rest).

A SIGTERM or SIGINT that arrives while the daemon is still importing or starting
is recorded, and the daemon stops cleanly as soon as it can, instead of dying
half-started (leaked worker processes and semaphores) or ignoring the signal.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalLatch:
    def __init__(self) -> None:
        self.received: list[int] = []
        self.installed = False

    def install(self) -> None:
        self.installed = True
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
