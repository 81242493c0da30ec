"""Drain the outbox table to the relay (or a Maildir), with retries and backoff.

Rows are claimed with a lease (next_attempt_at pushed ahead, FOR UPDATE SKIP
LOCKED on PostgreSQL) so several instances never send the same row at once; a
row is marked sent only after the relay accepted it, so a crash in between
means it is sent again, never lost (at least once, recorded once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import col

from maildesk.errors import PermanentError, TransientError
from maildesk.metrics import Metrics
from maildesk.storage.models import Outbox
from maildesk.work.transports import (
    SMTP_BATCH,
    BatchTransport,
    SessionTransport,
    Transport,
)
from maildesk.worker import Worker

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # a crashed sender's rows are retried after this
BATCH = 50  # mails claimed and recorded together (a BatchTransport: delivered together)


def release_claims(engine: Engine) -> int:
    """At start of a single-instance (SQLite) daemon: rows a crashed run had claimed
    are due again now, instead of after the lease."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        result = conn.execute(
            update(Outbox)
            .where(col(Outbox.status) == "queued", col(Outbox.next_attempt_at) > now)
            .values(next_attempt_at=now)
        )
        return int(result.rowcount)


@dataclass(frozen=True)
class _Claimed:
    row_id: int
    mail_from: str
    recipients: list[str]
    raw: bytes
    attempts: int
    message_id: str


@dataclass(frozen=True)
class _Result:
    row_id: int
    result: str  # sent, failed, retry
    error: str | None
    attempts: int


_RowUpdate = dict[str, Any]  # bound parameters of one row's UPDATE


@dataclass
class FlushStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@contextlib.asynccontextmanager
async def _one_connection(transport: Transport) -> AsyncIterator[Transport]:
    """The transport, over one connection for the batch where it has them (a relay)."""
    if isinstance(transport, SessionTransport):
        async with transport.session() as session:
            yield session
    else:
        yield transport


async def _send_one(transport: Transport, c: _Claimed) -> _Result:
    try:
        await transport.send(c.mail_from, c.recipients, c.raw)
    except PermanentError as exc:
        log.error("outbox %s: relay refused permanently: %s", c.row_id, exc)
        return _Result(c.row_id, "failed", str(exc), c.attempts + 1)
    except TransientError as exc:
        return _Result(c.row_id, "retry", str(exc), c.attempts + 1)
    except Exception as exc:  # a fault with this mail must not hold up the others
        log.exception("outbox %s: could not send", c.row_id)
        return _Result(c.row_id, "retry", f"{type(exc).__name__}: {exc}", c.attempts + 1)
    return _Result(c.row_id, "sent", None, c.attempts + 1)


class OutboxSender(Worker):
    """The outbox worker: each round delivers every due mail (`flush`)."""

    name = "outbox"
    idle_seconds = 2.0

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        max_attempts: int = 30,
        backoff: float = 5.0,
        backoff_max: float = 1800.0,
        metrics: Metrics | None = None,
        return_path: Callable[[int], str] | None = None,
    ) -> None:
        """`return_path(outbox id)`: the envelope sender (VERP), so a delivery report
        can be matched to the mail it is about (maildesk.core.replytoken.bounce_address)."""
        super().__init__()
        self._metrics = metrics
        self._return_path = return_path
        self._engine = engine
        self._transport = transport
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        # Rows this sender leased and has not recorded. Its rounds run one after another,
        # so at a claim they are what a round cancelled at stop left leased for LEASE:
        # the next claim (the last flush at shutdown) frees them first.
        self._unrecorded: set[int] = set()
        self._claiming = threading.Lock()  # a cancelled round's claim may still be running

    async def run_once(self) -> None:
        await self.flush()

    async def flush(self) -> FlushStats:
        """Claim a batch, deliver it, record it in one transaction; again until none is
        due. A mail is recorded sent only after the transport has it (durably, for the
        Maildir); a crash in between delivers the batch again after the lease (at least
        once), which a BatchTransport recognises and does not deliver twice."""
        stats = FlushStats()
        while True:
            claimed = await asyncio.to_thread(self._claim)
            if not claimed:
                return stats
            results = await self._deliver(claimed)
            await asyncio.to_thread(self._record, results)
            for result in results:
                self._count(result.result)
            stats.sent += sum(r.result == "sent" for r in results)
            stats.failed += sum(r.result == "failed" for r in results)
            stats.retried += sum(r.result == "retry" for r in results)
            if stats.retried:  # the relay is struggling: leave the rest for the next round
                return stats

    async def _deliver(self, claimed: list[_Claimed]) -> list[_Result]:
        if isinstance(self._transport, BatchTransport):
            try:
                await self._transport.send_many([(c.message_id, c.raw) for c in claimed])
            except OSError as exc:  # the disk: try again later
                error = f"{type(exc).__name__}: {exc}"
                return [_Result(c.row_id, "retry", error, c.attempts + 1) for c in claimed]
            return [_Result(c.row_id, "sent", None, c.attempts + 1) for c in claimed]
        async with _one_connection(self._transport) as transport:
            return [await _send_one(transport, c) for c in claimed]

    def _count(self, result: str) -> None:
        if self._metrics:
            self._metrics.sent.labels(result).inc()

    def _claim(self) -> list[_Claimed]:
        """Due rows, leased for LEASE: one SELECT (FOR UPDATE SKIP LOCKED on PostgreSQL)
        and one UPDATE, one transaction."""
        with self._claiming:
            if self._unrecorded:
                self._release_unrecorded()
            return self._lease_due()

    def _lease_due(self) -> list[_Claimed]:
        now = datetime.now(UTC)
        batch = SMTP_BATCH if not isinstance(self._transport, BatchTransport) else BATCH
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa_select(
                    col(Outbox.id),
                    col(Outbox.mail_from),
                    col(Outbox.recipients),
                    col(Outbox.raw),
                    col(Outbox.attempts),
                    col(Outbox.message_id),
                )
                .where(col(Outbox.status) == "queued", col(Outbox.next_attempt_at) <= now)
                .order_by(col(Outbox.id))
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return []
            ids = [int(r[0] or 0) for r in rows]
            conn.execute(
                update(Outbox).where(col(Outbox.id).in_(ids)).values(next_attempt_at=now + LEASE)
            )
        self._unrecorded.update(ids)
        return [
            _Claimed(
                row_id=row_id,
                mail_from=self._return_path(row_id) if self._return_path else mail_from,
                recipients=list(recipients),
                raw=bytes(raw),
                attempts=int(attempts),
                message_id=str(message_id),
            )
            for row_id, (_, mail_from, recipients, raw, attempts, message_id) in zip(
                ids, rows, strict=True
            )
        ]

    def _row_updates(
        self, results: list[_Result], now: datetime
    ) -> tuple[list[_RowUpdate], list[_RowUpdate], list[_RowUpdate]]:
        """The parameters of the three UPDATEs (sent, failed, retry later), one set per
        result: a retry past max_attempts fails; a retry is due after an exponential
        backoff with jitter."""
        sent: list[_RowUpdate] = []
        failed: list[_RowUpdate] = []
        retry: list[_RowUpdate] = []
        for r in results:
            if r.result == "sent":
                sent.append({"row_id": r.row_id, "attempts": r.attempts, "sent_at": now})
            elif r.result == "failed" or r.attempts >= self.max_attempts:
                error = r.error
                if r.result == "retry":
                    error = f"gave up after {r.attempts} attempts: {r.error}"
                    log.error("outbox %s: %s", r.row_id, error)
                failed.append({"row_id": r.row_id, "attempts": r.attempts, "error": error})
            else:
                delay = min(self.backoff * 2 ** (r.attempts - 1), self.backoff_max)
                delay *= random.uniform(0.8, 1.2)
                retry.append(
                    {
                        "row_id": r.row_id,
                        "attempts": r.attempts,
                        "error": r.error,
                        "due": now + timedelta(seconds=delay),
                    }
                )
                log.warning(
                    "outbox %s: attempt %d failed (%s); next in %.0f s",
                    r.row_id,
                    r.attempts,
                    r.error,
                    delay,
                )
        return sent, failed, retry

    def _release_unrecorded(self) -> None:
        """The leases of a round that was cancelled (a stop) end now: those rows are due.
        A mail the transport may already have is sent again (at least once, as after a
        crash; a BatchTransport recognises it)."""
        ids = sorted(self._unrecorded)
        with self._engine.begin() as conn:
            conn.execute(
                update(Outbox)
                .where(col(Outbox.id).in_(ids), col(Outbox.status) == "queued")
                .values(next_attempt_at=datetime.now(UTC))
            )
        self._unrecorded.difference_update(ids)

    def _record(self, results: list[_Result]) -> None:
        """Every result of a batch in one transaction, by id: no row is read first."""
        sent, failed, retry = self._row_updates(results, datetime.now(UTC))
        by_id = col(Outbox.id) == bindparam("row_id")
        with self._engine.begin() as conn:
            if sent:
                conn.execute(
                    update(Outbox)
                    .where(by_id)
                    .values(
                        status="sent",
                        last_error=None,
                        attempts=bindparam("attempts"),
                        sent_at=bindparam("sent_at"),
                    ),
                    sent,
                )
            if failed:
                conn.execute(
                    update(Outbox)
                    .where(by_id)
                    .values(
                        status="failed",
                        last_error=bindparam("error"),
                        attempts=bindparam("attempts"),
                    ),
                    failed,
                )
            if retry:
                conn.execute(
                    update(Outbox)
                    .where(by_id)
                    .values(
                        last_error=bindparam("error"),
                        attempts=bindparam("attempts"),
                        next_attempt_at=bindparam("due"),
                    ),
                    retry,
                )
        self._unrecorded.difference_update(r.row_id for r in results)
