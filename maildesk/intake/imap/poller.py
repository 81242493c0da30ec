"""The IMAP poller: one task per mailbox, on the daemon's asyncio loop.

For each mailbox: hold the lease (one instance polls it), connect, select the
folder, compare UIDVALIDITY with the stored one (a change means a full
rescan), then loop: find mail, fetch it in batches, spool it durably, wait for
the pipeline's verdict, and only then flag \\Seen and move it to the done
folder (or to the errors folder). Then wait in IDLE, or sleep until the next
poll. Every IMAP call runs in the poller's own thread (imapclient blocks);
spooling and verdicts happen on the loop.

One sweep of the folder (find, fetch, spool, settle, with the batches
overlapping) is maildesk.intake.imap.sweep; this module holds the lease, the
connection, IDLE and the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from maildesk.errors import ConfigError, TransientError
from maildesk.intake.imap.handover import NO_HOOKS, PollerHooks, one_line
from maildesk.intake.imap.lease import Lease, try_acquire
from maildesk.intake.imap.plan import PollerOptions, PollerState, backoff_delay
from maildesk.intake.imap.session import ImapAuthFailed, ImapRefused, ImapSession, ImapUnavailable
from maildesk.intake.imap.sweep import Sweeper
from maildesk.intake.imap.url import Mailbox
from maildesk.intake.spool import Spool
from maildesk.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")
_counter = itertools.count(1)


class Poller(Worker):
    """One mailbox: a worker with a loop of its own (lease, IDLE, backoff)."""

    def __init__(
        self,
        mailbox: Mailbox,
        engine: Engine,
        spool: Spool,
        options: PollerOptions | None = None,
        hooks: PollerHooks = NO_HOOKS,
    ) -> None:
        super().__init__()
        self.name = f"imap {mailbox.label}"
        self.mailbox = mailbox
        self.options = options or PollerOptions()
        self._engine = engine
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap{next(_counter)}")
        self._session: ImapSession | None = None
        self._state = PollerState.CONNECTING
        self._last_error: str | None = None
        self._logged: tuple[str, float] | None = None
        self._last_success: datetime | None = None
        self._attempt = 0
        self.counts = {"ingested": 0, "moved": 0, "errors": 0}
        self._sweeper = Sweeper(mailbox, engine, spool, self.options, hooks, self._io, self.counts)

    # -- what the daemon sees ----------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox.label,
            "state": self._state.value,
            "last_error": self._last_error,
            "last_success": self._last_success.isoformat() if self._last_success else None,
            "uidvalidity": self._sweeper.mb.uidvalidity,
            "last_uid": self._sweeper.mb.last_uid,
            "failing": len(self._sweeper.mb.failures),
            "waiting_for_pipeline": len(self._sweeper.pending),
            **self.counts,
        }

    def wake(self) -> None:
        """Look for mail now (ends an IDLE or a poll sleep)."""
        self._wake.set()

    def abort(self) -> None:
        """Unblock the IMAP thread quickly when stopping."""
        if self._session is not None:
            self._session.abort()

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    # -- the loop ------------------------------------------------------------

    async def run_forever(self) -> None:
        """Poll until cancelled; never raises for network, server or database trouble."""
        try:
            while True:
                lease = await self._acquire()
                if lease is None:
                    continue
                try:
                    await self._serve(lease)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(lease.release)
        finally:
            self._state = PollerState.STOPPED

    async def _acquire(self) -> Lease | None:
        try:
            lease = await asyncio.to_thread(try_acquire, self._engine, self.mailbox.key)
        except Exception as exc:
            delay = self._next_delay()
            self._problem(PollerState.BACKOFF, f"database unavailable for the lease: {exc}", delay)
            await self._sleep(delay)
            return None
        if lease is None:
            if self._state is not PollerState.STANDBY:
                log.info(
                    "imap %s: another maildesk instance polls this mailbox; standing by",
                    self.mailbox.label,
                )
            self._state = PollerState.STANDBY
            await self._sleep(self.options.lease_retry_seconds)
            return None
        if self._state is PollerState.STANDBY:
            log.info("imap %s: took over polling this mailbox", self.mailbox.label)
        return lease

    async def _serve(self, lease: Lease) -> None:
        """Connect and work while the lease holds; reconnect with capped backoff."""
        while await asyncio.to_thread(lease.still_held):
            self._state = PollerState.CONNECTING
            delay: float
            try:
                session = await self._call(ImapSession.connect, self.mailbox)
            except ImapAuthFailed as exc:
                delay = self.options.auth_retry_seconds
                self._problem(
                    PollerState.AUTH_FAILED,
                    f"{exc} (check the user and password in MAILDESK_IMAP_URL or "
                    "MAILDESK_IMAP_PASSWORD_FILE)",
                    delay,
                    level=logging.ERROR,
                )
                await self._sleep(delay)
                continue
            except (ImapRefused, ConfigError) as exc:
                delay = self.options.auth_retry_seconds
                self._problem(PollerState.BACKOFF, str(exc), delay, level=logging.ERROR)
                await self._sleep(delay)
                continue
            except ImapUnavailable as exc:
                delay = self._next_delay()
                self._problem(PollerState.BACKOFF, str(exc), delay)
                await self._sleep(delay)
                continue
            self._session = session
            try:
                log.log(
                    logging.INFO if self._last_error is None else logging.WARNING,
                    "imap %s: connected (%s%s%s)%s",
                    self.mailbox.label,
                    session.security.value,
                    ", IDLE" if session.can_idle else ", no IDLE: polling",
                    ", MOVE" if session.can_move else ", COPY+EXPUNGE",
                    "" if self._last_error is None else " after: " + self._last_error,
                )
                await self._work(session, lease)
                return
            except (ImapUnavailable, TransientError, SQLAlchemyError) as exc:
                delay = self._next_delay()
                self._problem(PollerState.BACKOFF, one_line(exc), delay)
            except Exception as exc:  # a bug: say so once with the traceback, keep going
                delay = self._next_delay()
                log.exception("imap %s: unexpected error", self.mailbox.label)
                self._problem(PollerState.BACKOFF, one_line(exc), delay, level=logging.DEBUG)
            finally:
                self._session = None
                await asyncio.shield(self._call(session.close))
            await self._sleep(delay)

    async def _work(self, session: ImapSession, lease: Lease) -> None:
        opts = self.options
        for folder in (opts.done_folder, opts.errors_folder):
            await self._call(session.ensure_folder, folder)
        info = await self._call(session.select, self.mailbox.folder)
        await self._sweeper.open(info.uidvalidity)
        full = True
        while True:
            if not await asyncio.to_thread(lease.still_held):
                log.warning("imap %s: lease lost; stopping to poll here", self.mailbox.label)
                return
            self._state = PollerState.POLLING
            await self._sweeper.sweep(session, full)
            self._last_success = datetime.now(UTC)
            if self._last_error is not None:
                self._last_error = None
                self._logged = None
            self._attempt = 0
            full = await self._wait(session)

    async def _wait(self, session: ImapSession) -> bool:
        """Wait for mail; True when the next sweep should be a full one."""
        opts = self.options
        if self._wake.is_set():
            self._wake.clear()
            return True
        if not session.can_idle:
            self._state = PollerState.POLLING
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), opts.poll_seconds)
            self._wake.clear()
            return True
        await self._call(session.idle_start)
        self._state = PollerState.IDLE
        deadline = time.monotonic() + min(opts.poll_seconds, opts.idle_renew_seconds)
        news = False
        while not news and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            news = await self._call(session.idle_wait, min(1.0, left))
        news = await self._call(session.idle_done) or news
        if self._wake.is_set():
            self._wake.clear()
            return True
        return not news

    # -- helpers -------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _next_delay(self) -> float:
        delay = backoff_delay(self._attempt, self.options.backoff_first, self.options.backoff_max)
        self._attempt += 1
        return delay

    def _problem(
        self, state: PollerState, error: str, retry_in: float, level: int = logging.WARNING
    ) -> None:
        """Record a problem; log it when it is new (or an hour old), not on every retry."""
        self._state = state
        self._last_error = error
        now = time.monotonic()
        repeat = self._logged is not None and self._logged[0] == error
        if repeat and self._logged is not None and now - self._logged[1] < 3600:
            log.debug("imap %s: still failing: %s", self.mailbox.label, error)
            return
        self._logged = (error, now)
        log.log(level, "imap %s: %s; retrying in %g s", self.mailbox.label, error, retry_in)
