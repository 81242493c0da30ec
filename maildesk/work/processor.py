"""Drain the inbound spool through the pipeline.

Parsing runs in worker processes (bounded in time); the database part runs in
one thread. Mails of a batch share one transaction (group commit: one fsync),
each inside its own SAVEPOINT, so one failing mail never takes the others
down with it. A mail that keeps failing is parked as `failed`, raw kept.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, bindparam, event, or_, update
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.parse import InboundMail
from maildesk.metrics import Metrics
from maildesk.storage import facts, pending, prefetch
from maildesk.storage.db import is_postgres, read_only
from maildesk.storage.models import Inbound
from maildesk.work.handle import KnownKeys, NotifyPolicy, Tools, handle
from maildesk.work.inflight import BATCH, Inflight
from maildesk.work.parsepool import ParseFailure, ParserPool
from maildesk.work.spamlearn import Lesson, SureLearner
from maildesk.worker import Worker

if TYPE_CHECKING:
    from maildesk.spam import SpamFilter

log = logging.getLogger(__name__)

READY_GRACE = 0.05  # seconds to let the rest of a batch finish parsing, for one commit
COMMIT_EVERY = 100  # mails per transaction: one fsync; SQLite's write lock is held ~100 ms at most
MAX_ATTEMPTS = 3
# PostgreSQL: an instance's claim on the `new` rows it parses. Only saves work: a row
# whose claim ran out is parsed by another instance too, and still stored once.
CLAIM = timedelta(seconds=15)
@dataclass
class DrainStats:
    processed: int = 0
    tickets: set[int] = field(default_factory=set)
    duplicates: int = 0
    failed: int = 0


_RECORD_RESULT = (
    update(Inbound)
    .where(col(Inbound.id) == bindparam("row_id"))
    .values(
        status=bindparam("status"),
        ticket_id=bindparam("ticket_id"),
        dedupe_key=bindparam("dedupe_key"),
        error=bindparam("error"),
        processed_at=bindparam("processed_at"),
    )
)


def _chunk_session(engine: Engine) -> Session:
    """A session whose loaded rows stay in its identity map until it closes (a chunk of
    at most COMMIT_EVERY mails): a ticket or round-robin pointer read while deciding is
    not selected again when the decision is written."""
    session = Session(engine)
    kept: list[object] = []

    @event.listens_for(session, "loaded_as_persistent")
    def _keep(_session: Session, instance: object) -> None:
        kept.append(instance)

    return session


def _inbound_rows(session: Session, ids: list[int]) -> dict[int | None, Inbound]:
    """The chunk's rows still `new` (locked on PostgreSQL; another instance's are skipped)."""
    return {
        row.id: row
        for row in session.exec(
            select(Inbound)
            .options(defer(Inbound.raw))  # type: ignore[arg-type]  # the parse has the bytes
            .where(col(Inbound.id).in_(ids), Inbound.status == "new")
            .with_for_update(skip_locked=True)
        )
    }


def _read_ahead(
    session: Session, parsed: Sequence[InboundMail | ParseFailure], runtime: Runtime,
    now: datetime,
) -> KnownKeys:
    """Before the chunk's first mail: which of its mails are stored already, and what
    the others will ask (maildesk.storage.prefetch)."""
    mails = [p for p in parsed if isinstance(p, InboundMail)]
    known = _known_keys(session, mails)
    prefetch.prefetch_chunk(
        session, [m for m in mails if m.dedupe_key not in known.stored],
        [member.email for member in runtime.rules.staff], now,
    )
    return known


def _known_keys(session: Session, mails: Sequence[InboundMail]) -> KnownKeys:
    """Look up in one query the dedupe keys that occur once in a chunk (a key that occurs
    twice is looked up when its turn comes, after the first one was stored)."""
    counts = Counter(p.dedupe_key for p in mails)
    once = frozenset(key for key, n in counts.items() if n == 1)
    if not once:
        return KnownKeys()
    return KnownKeys(once, facts.stored_dedupe_keys(session, sorted(once)))


class Processor(Worker):
    """The pipeline worker: each round drains every `new` inbound row."""

    name = "pipeline"

    def __init__(
        self,
        engine: Engine,
        runtime: Callable[[], Runtime],
        parser: ParserPool,
        on_committed: Callable[[], None] | None = None,
        spam_filter: Callable[[], SpamFilter] | None = None,
        metrics: Metrics | None = None,
        notify: NotifyPolicy | None = None,
        learner: SureLearner | None = None,
    ) -> None:
        super().__init__()
        self._metrics = metrics
        self._learner = learner
        self._notify = notify
        self._engine = engine
        self._runtime = runtime
        self._spam_filter = spam_filter
        self._parser = parser
        self._on_committed = on_committed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._draining = asyncio.Lock()  # one drain at a time: no row is parsed twice

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def run_once(self) -> None:
        await self.drain()

    async def drain(self, progress: Callable[[int], None] | None = None) -> DrainStats:
        """Process every `new` inbound row; returns what happened."""
        async with self._draining:
            return await self._drain(progress)

    async def warm_up(self) -> None:
        """Start the parser processes (with the language model) before the first mail."""
        await self._parser.parse(b"Subject: warm-up\r\n\r\nwarm-up\r\n")

    async def _drain(self, progress: Callable[[int], None] | None) -> DrainStats:
        stats = DrainStats()
        loop = asyncio.get_running_loop()
        inflight = Inflight()
        exhausted = False  # the last look found no new row
        while True:
            # Keep the parsers a batch ahead of the commits: the next rows are read and
            # parsing while this batch is committed, so the pipeline never waits for them.
            if inflight.wants_more() and not exhausted:
                found = await loop.run_in_executor(self._executor, self._pending, inflight.after)
                inflight.add(found, self._parser)
                exhausted = not found
            if not inflight.waiting:
                if exhausted:
                    return stats
                continue
            # Commit what is parsed, in arrival order, without waiting for a slow mail:
            # a pathological one holds up only itself (until the parse time limit) and
            # the replies to it, which must find their original's ticket.
            ready = inflight.ready(BATCH)  # then read more before the next commit
            if not ready:
                unfinished = inflight.unfinished()
                await asyncio.wait(unfinished, return_when=FIRST_COMPLETED)
                await asyncio.wait(unfinished, timeout=READY_GRACE)
                continue
            results = await loop.run_in_executor(self._executor, self._commit, ready)
            exhausted = False  # rows may have come in while these were committed
            self._count(stats, results)
            if progress:
                progress(len(ready))
            if self._on_committed:
                self._on_committed()

    def _count(self, stats: DrainStats, results: list[tuple[str, int | None]]) -> None:
        for outcome, ticket_id in results:
            if self._metrics:
                self._metrics.processed.labels(outcome).inc()
            stats.processed += outcome != "skipped"
            stats.duplicates += outcome == "duplicate"
            stats.failed += outcome == "failed"
            if ticket_id is not None and outcome == "done":
                stats.tickets.add(ticket_id)

    def _pending(self, after: int) -> list[tuple[int, bytes]]:
        if is_postgres(self._engine):
            return self._claim(after)
        with Session(read_only(self._engine)) as session:
            rows = session.exec(
                select(Inbound.id, Inbound.raw)
                .where(Inbound.status == "new", col(Inbound.id) > after)
                .order_by(col(Inbound.id))
                .limit(BATCH)
            ).all()
        return [(int(i), bytes(r)) for i, r in rows if i is not None]

    def _claim(self, after: int) -> list[tuple[int, bytes]]:
        """Several instances on one PostgreSQL: each parses only the rows it claimed
        (processed_at set ahead while a row is still `new`; a claim of an instance
        that died expires after CLAIM). Without this every instance parsed every mail."""
        now = datetime.now(UTC)
        with Session(self._engine) as session:
            rows = session.exec(
                select(Inbound)
                .where(
                    Inbound.status == "new",
                    col(Inbound.id) > after,
                    or_(
                        col(Inbound.processed_at).is_(None),
                        col(Inbound.processed_at) < now - CLAIM,
                    ),
                )
                .order_by(col(Inbound.id))
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            claimed = []
            for row in rows:
                assert row.id is not None
                row.processed_at = now
                session.add(row)
                claimed.append((row.id, bytes(row.raw)))
            session.commit()
        return claimed

    def _commit(
        self, items: list[tuple[int, InboundMail | ParseFailure]]
    ) -> list[tuple[str, int | None]]:
        runtime = self._runtime()
        spam_filter = self._spam_filter() if self._spam_filter else None
        now = datetime.now(UTC)
        results: list[tuple[str, int | None]] = []
        for start in range(0, len(items), COMMIT_EVERY):
            chunk = items[start : start + COMMIT_EVERY]
            results.extend(self._commit_chunk(chunk, runtime, spam_filter, now))
        return results

    def _commit_chunk(
        self,
        items: list[tuple[int, InboundMail | ParseFailure]],
        runtime: Runtime,
        spam_filter: SpamFilter | None,
        now: datetime,
    ) -> list[tuple[str, int | None]]:
        """One transaction for the chunk. Tried first without a SAVEPOINT per mail (two
        statements each); if anything fails, the whole chunk is rolled back and done
        again mail by mail, each in its own SAVEPOINT, so one bad mail parks only itself."""
        for careful in (False, True):
            lessons: list[Lesson] | None = [] if self._learner else None
            try:
                with _chunk_session(self._engine) as session:
                    results = self._process_chunk(
                        session, items, runtime, spam_filter, now, careful, lessons
                    )
                    session.commit()
            except Exception:
                if careful:
                    raise
                log.info("a mail of this chunk failed; processing it mail by mail",
                         exc_info=True)
                continue
            if self._learner and lessons:  # a lesson whose savepoint rolled back finds no row
                self._learner.add(lessons)
            return results
        raise AssertionError("unreachable: the careful pass returns or raises")

    def _process_chunk(
        self,
        session: Session,
        items: list[tuple[int, InboundMail | ParseFailure]],
        runtime: Runtime,
        spam_filter: SpamFilter | None,
        now: datetime,
        careful: bool,
        lessons: list[Lesson] | None = None,
    ) -> list[tuple[str, int | None]]:
        """Not `careful`: any error propagates. `careful`: each mail in a SAVEPOINT, and
        a mail that fails is recorded as such. The inbound rows are read in one query
        and their results written in one executemany."""
        rows = _inbound_rows(session, [i for i, _ in items])
        known = _read_ahead(session, [p for _, p in items], runtime, now)
        tools = Tools(runtime, spam_filter, self._notify, known, lessons)
        results: list[tuple[str, int | None]] = []
        finished: list[dict[str, object]] = []
        for inbound_id, parsed in items:
            row = rows.get(inbound_id)
            if row is None:  # another instance has it, or it is finished
                results.append(("skipped", None))
                continue
            if not careful:
                done = handle(session, row, parsed, tools, now)
            else:
                try:
                    with session.begin_nested():
                        done = handle(session, row, parsed, tools, now)
                        pending.flush(session)  # its rows inside its SAVEPOINT
                except Exception as exc:
                    pending.discard(session)
                    # IntegrityError included: a concurrent instance stored the same
                    # Message-ID first, and the next pass records it as a duplicate.
                    log.exception("inbound %s: pipeline error", inbound_id)
                    results.append(self._record_failure(session, inbound_id, exc))
                    continue
            results.append((done.outcome, done.ticket_id))
            finished.append(
                {
                    "row_id": inbound_id,
                    "status": done.outcome,
                    "ticket_id": done.ticket_id,
                    "dedupe_key": done.dedupe_key,
                    "error": done.error,
                    "processed_at": now,
                }
            )
        if finished:
            session.flush()
            session.connection().execute(_RECORD_RESULT, finished)
        return results

    def _record_failure(
        self, session: Session, inbound_id: int, exc: Exception
    ) -> tuple[str, int | None]:
        row = session.get(Inbound, inbound_id)
        if row is None:
            return "skipped", None
        row.attempts += 1
        row.error = f"{type(exc).__name__}: {exc}"[:2000]
        row.processed_at = None  # not claimed any more: the next pass retries it
        if row.attempts >= MAX_ATTEMPTS:
            row.processed_at = datetime.now(UTC)
            row.status = "failed"
            log.error("inbound %s failed %d times, parked: %s", inbound_id, row.attempts, row.error)
        session.add(row)
        return ("failed" if row.status == "failed" else "retry"), None
