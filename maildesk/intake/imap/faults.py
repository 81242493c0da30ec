"""Fault injection for tests only: make the poller fail at a chosen point.

Never set in production. Tests inject a `Faults` object directly, or (for a
`maildesk run` subprocess) set MAILDESK_IMAP_FAULT to a comma-separated list:

    poison=TEXT        ingesting a mail whose raw bytes contain TEXT raises
    kill-before-move   SIGKILL this process after the first ticket commit,
                       before the mail is moved (a crash at the worst moment)
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from maildesk.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "MAILDESK_IMAP_FAULT"


class InjectedFault(RuntimeError):
    """Raised by a test fault hook."""


@dataclass(frozen=True)
class Faults:
    poison: bytes | None = None
    kill_before_move: bool = False

    def before_ingest(self, uid: int, raw: bytes) -> None:
        if self.poison is not None and self.poison in raw:
            raise InjectedFault(f"test fault: poison message (uid {uid})")

    def before_move(self, uids: Sequence[int]) -> None:
        if self.kill_before_move and uids:
            log.warning("test fault: SIGKILL after commit, before moving %d mail(s)", len(uids))
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = Faults()


def faults_from_env() -> Faults:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return NO_FAULTS
    poison: bytes | None = None
    kill = False
    for item in (p.strip() for p in value.split(",")):
        if item.startswith("poison="):
            poison = item.removeprefix("poison=").encode()
        elif item == "kill-before-move":
            kill = True
        elif item:
            raise ConfigError(f"{ENV}: unknown fault {item!r}")
    log.warning("%s is set (%s): test fault injection is active", ENV, value)
    return Faults(poison=poison, kill_before_move=kill)
