"""Fault injection for tests: make the IMAP poller fail at a chosen point.

`Faults` fills the poller's hooks (maildesk.intake.imap.poller.PollerHooks). A test
that needs a real `maildesk run` to crash starts `python -m tests.faultydaemon run`
(see there) instead of `python -m maildesk run`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from maildesk.intake.imap import PollerHooks

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised by a test fault hook."""


@dataclass(frozen=True)
class Faults(PollerHooks):
    """poison: ingesting a mail whose raw bytes contain it raises; kill_before_move:
    SIGKILL this process after the first ticket commit, before the mail is moved."""

    poison: bytes | None = None
    kill_before_move: bool = False

    def before_ingest(self, uid: int, raw: bytes) -> None:
        if self.poison is not None and self.poison in raw:
            raise InjectedFault(f"test fault: poison message (uid {uid})")

    def before_move(self, uids: Sequence[int]) -> None:
        if self.kill_before_move and uids:
            log.warning("test fault: SIGKILL after commit, before moving %d mail(s)", len(uids))
            os.kill(os.getpid(), signal.SIGKILL)
