"""One sweep of an IMAP folder: find the mail, fetch it in batches, spool each batch
durably, wait for the pipeline's verdicts, and only then flag \\Seen and move the mail
to the done folder (or to the errors folder); what failed is counted, and poison once
it failed too often.

Batches overlap: while the pipeline works on batch N, batch N+1 is already
spooled, batch N+2 is fetched and batch N-1 is moved, so neither side waits for
the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from maildesk.intake.imap.handover import (
    PollerHooks,
    Spooled,
    record_poison,
    spool_batch,
    wait_for_verdicts,
)
from maildesk.intake.imap.plan import PollerOptions, plan_batches
from maildesk.intake.imap.session import ImapSession, ImapUnavailable
from maildesk.intake.imap.state import Failure, MailboxState, StateStore
from maildesk.intake.imap.url import Mailbox
from maildesk.intake.spool import Spool

log = logging.getLogger("maildesk.intake.imap.poller")  # the poller's story, one logger

T = TypeVar("T")
FINISHED = ("done", "duplicate")
# Batches spooled before the oldest one's verdicts are waited for: the pipeline always
# has the next batch while the poller moves the last one and fetches another.
SPOOLED_AHEAD = 2


class Sweeper:
    """A mailbox's folder, swept on the poller's connection: the stored state of the
    folder (`mb`), the mail the pipeline has not decided yet (`pending`) and the
    counts the poller shows (`counts`, the poller's own dict)."""

    def __init__(
        self,
        mailbox: Mailbox,
        engine: Engine,
        spool: Spool,
        options: PollerOptions,
        hooks: PollerHooks,
        io: ThreadPoolExecutor,
        counts: dict[str, int],
    ) -> None:
        """`io`: the poller's IMAP thread, where every call on the session runs."""
        self.mailbox = mailbox
        self.options = options
        self._engine = engine
        self._spool = spool
        self._hooks = hooks
        self._io = io
        self._store = StateStore(engine, mailbox.key)
        self.mb = MailboxState()
        self.pending: dict[int, int] = {}  # uid -> inbound id still waiting for the pipeline
        self.counts = counts

    async def open(self, uidvalidity: int) -> None:
        """The stored state of the selected folder; a new UIDVALIDITY starts it afresh."""
        self.mb = await asyncio.to_thread(self._store.load)
        if self.mb.uidvalidity != uidvalidity:
            if self.mb.uidvalidity is not None:
                log.warning(
                    "imap %s: UIDVALIDITY changed (%s -> %s): rescanning the whole folder; "
                    "mail seen before is recognised as duplicate",
                    self.mailbox.label,
                    self.mb.uidvalidity,
                    uidvalidity,
                )
            self.mb = await asyncio.to_thread(self._store.reset, uidvalidity)
            self.pending.clear()

    async def sweep(self, session: ImapSession, full: bool) -> None:
        """The whole folder when `full`, else what is new, failing or still waiting."""
        uids = await self._listed(session, full)
        waiting = {u: self.pending[u] for u in uids if u in self.pending}
        if waiting:  # spooled earlier; look once whether the pipeline has finished them
            await self._settle(session, Spooled(sorted(waiting), waiting), wait=False)
        todo = [u for u in uids if u not in self.pending]
        if not todo:
            return
        sizes = await self._call(session.sizes, todo)
        gone = {u for u in self.mb.failures if u in todo and u not in sizes}
        if gone:
            await asyncio.to_thread(self._store.save, cleared=gone)
            for uid in gone:
                self.mb.failures.pop(uid, None)
        present = [u for u in todo if u in sizes]
        opts = self.options
        batches = plan_batches(present, sizes, opts.batch_mails, opts.batch_bytes)
        if batches:
            await self._ingest(session, batches)

    async def _listed(self, session: ImapSession, full: bool) -> list[int]:
        """The UIDs to look at: the whole folder (waiting mails someone else removed
        meanwhile are forgotten), or what is new, failing or still waiting."""
        if not full:
            found = await self._call(session.search_after, self.mb.last_uid)
            return sorted({*found, *self.mb.failures, *self.pending})
        uidvalidity = await self._call(session.uidvalidity, self.mailbox.folder)
        if uidvalidity != self.mb.uidvalidity:
            raise ImapUnavailable(
                f"folder {self.mailbox.folder} was recreated (UIDVALIDITY changed); reselecting"
            )
        uids: list[int] = await self._call(session.search_all)
        listed = set(uids)
        for uid in [u for u in self.pending if u not in listed]:
            del self.pending[uid]
        return uids

    async def _ingest(self, session: ImapSession, batches: list[list[int]]) -> None:
        """Fetch the next batch while this one is spooled; move each batch once the
        pipeline has decided it, with at most SPOOLED_AHEAD batches waiting for that."""
        loop = asyncio.get_running_loop()
        prefetch = loop.run_in_executor(self._io, session.fetch, batches[0])
        unsettled: deque[Spooled] = deque()  # spooled, verdicts not taken yet, oldest first
        try:
            for n, batch in enumerate(batches):
                mails = await prefetch
                unsettled.append(
                    await spool_batch(self._spool, self._hooks, self._source, batch, mails)
                )
                self.counts["ingested"] += len(unsettled[-1].ids)
                del mails
                if n + 1 < len(batches):
                    prefetch = loop.run_in_executor(self._io, session.fetch, batches[n + 1])
                if len(unsettled) > SPOOLED_AHEAD:
                    await self._settle(session, unsettled[0])
                    unsettled.popleft()
            while unsettled:
                await self._settle(session, unsettled[0])
                unsettled.popleft()
        finally:
            for spooled in unsettled:  # interrupted: remember what the pipeline already has
                self.pending.update(spooled.ids)
            if not prefetch.done():
                prefetch.cancel()
            with contextlib.suppress(BaseException):
                if prefetch.done() and not prefetch.cancelled():
                    prefetch.exception()

    async def _settle(self, session: ImapSession, batch: Spooled, wait: bool = True) -> None:
        """Wait for the pipeline, then move what is committed; note what failed."""
        opts = self.options
        verdicts = await wait_for_verdicts(
            self._engine, batch.ids, wait, opts.verdict_stall_seconds, self.mailbox.label
        )
        done = [u for u, v in verdicts.items() if v is not None and v.status in FINISHED]
        failed = [u for u, v in verdicts.items() if v is not None and v.status not in FINISHED]
        for uid in failed:
            verdict = verdicts[uid]
            log.error(
                "imap %s: uid %d kept raw as inbound %d, not processed (%s); moving it to %s",
                self.mailbox.label,
                uid,
                batch.ids[uid],
                verdict.error if verdict else "?",
                opts.errors_folder,
            )
        for uid, verdict in verdicts.items():
            if verdict is None:
                self.pending[uid] = batch.ids[uid]
            else:
                self.pending.pop(uid, None)

        counted, poisoned = self._count_failures(batch)
        if poisoned:
            await asyncio.to_thread(
                record_poison, self._engine, poisoned, opts, self.mailbox.label, self._source
            )

        self._hooks.before_move(done)
        await self._call(session.move, done, opts.done_folder, True)
        to_errors = failed + [uid for uid, _, _ in poisoned]
        await self._call(session.move, to_errors, opts.errors_folder, False)
        self.counts["moved"] += len(done)
        self.counts["errors"] += len(to_errors)

        cleared = {u for u in (*done, *to_errors) if u in self.mb.failures}
        last_uid = max([self.mb.last_uid, *batch.uids])
        if counted or cleared or last_uid != self.mb.last_uid:
            await asyncio.to_thread(
                self._store.save,
                last_uid if last_uid != self.mb.last_uid else None,
                counted,
                cleared,
            )
        self.mb.last_uid = last_uid
        self.mb.failures.update(counted)
        for uid in cleared:
            self.mb.failures.pop(uid, None)

    def _count_failures(
        self, batch: Spooled
    ) -> tuple[dict[int, Failure], list[tuple[int, str, bytes]]]:
        """Mails that failed to ingest: counted again, or poison once they failed too often."""
        counted: dict[int, Failure] = {}
        poisoned: list[tuple[int, str, bytes]] = []
        for uid, (why, raw) in batch.errors.items():
            before = self.mb.failures.get(uid)
            failure = Failure((before.count if before else 0) + 1, why)
            log.warning(
                "imap %s: uid %d failed to ingest (%d of %d): %s",
                self.mailbox.label,
                uid,
                failure.count,
                self.options.max_failures,
                why,
            )
            if failure.count >= self.options.max_failures:
                poisoned.append((uid, why, raw))
            else:
                counted[uid] = failure
        return counted, poisoned

    def _source(self, uid: int) -> str:
        return f"imap:{self.mailbox.label} uid {self.mb.uidvalidity}:{uid}"[:200]

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
