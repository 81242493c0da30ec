"""Start and stop the pollers of every mailbox in MAILDESK_IMAP_URL, and
report their health (the daemon's /healthz collects `health()`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from sqlalchemy import Engine

from maildesk.config.settings import Settings
from maildesk.intake.imap.faults import Faults, faults_from_env
from maildesk.intake.imap.plan import PollerOptions
from maildesk.intake.imap.poller import Poller
from maildesk.intake.imap.url import Mailbox, parse_mailboxes
from maildesk.intake.spool import Spool

log = logging.getLogger(__name__)

# Running pollers, so that /healthz can find them without being handed them.
_RUNNING: weakref.WeakSet[Poller] = weakref.WeakSet()


def options_from_settings(settings: Settings) -> PollerOptions:
    return PollerOptions(
        done_folder=settings.imap_done_folder,
        poll_seconds=settings.imap_poll_seconds,
    )


def mailboxes_from_settings(settings: Settings) -> list[Mailbox]:
    """The configured mailboxes; a ConfigError names the variable and the problem."""
    return parse_mailboxes(settings.imap_url, settings.imap_password_file)


class ImapPollers:
    """The pollers of one daemon, each a task on the running loop."""

    def __init__(self, pollers: list[Poller]) -> None:
        self.pollers = pollers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for poller in self.pollers:
            _RUNNING.add(poller)
            self._tasks.append(loop.create_task(poller.run(), name=f"imap {poller.mailbox.label}"))

    def health(self) -> list[dict[str, Any]]:
        return [p.health() for p in self.pollers]

    def wake(self) -> None:
        for poller in self.pollers:
            poller.wake()

    async def stop(self, grace: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            if pending:  # stuck in a blocking read: cut the sockets
                for poller in self.pollers:
                    poller.abort()
                await asyncio.wait(pending, timeout=grace)
        for poller in self.pollers:
            poller.close()
            _RUNNING.discard(poller)
        for task in self._tasks:
            if task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.result()
        self._tasks.clear()


def start_pollers(
    settings: Settings, engine: Engine, spool: Spool, faults: Faults | None = None
) -> ImapPollers:
    """Start one poller per mailbox on the running loop (call after `spool.start()`).

    The spool's `on_stored` must wake the pipeline; the pollers wait for its
    verdict before they move a mail.
    """
    options = options_from_settings(settings)
    hooks = faults if faults is not None else faults_from_env()
    group = ImapPollers(
        [Poller(mb, engine, spool, options, hooks) for mb in mailboxes_from_settings(settings)]
    )
    group.start()
    logging.getLogger("imapclient").setLevel(logging.WARNING)  # its per-connection chatter
    log.info(
        "imap: polling %s (done folder %s; full check every %g s, IDLE in between)",
        ", ".join(p.mailbox.label for p in group.pollers),
        options.done_folder,
        options.poll_seconds,
    )
    return group


def health() -> list[dict[str, Any]]:
    """The health of every running poller in this process."""
    return [p.health() for p in list(_RUNNING)]
