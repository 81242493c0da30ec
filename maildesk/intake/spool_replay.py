"""Replay spool segments into the inbound table, idempotently, in big batches.

Each record carries a spool key unique across instances and restarts; the insert is
``ON CONFLICT (spool_key) DO NOTHING``, so a segment replayed twice (a crash after the
commit, before the file was deleted) stores each mail once. A segment is deleted only
when it is sealed and every record in it is committed; one with damage is kept as
``.bad`` for a human, after its intact records are replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col

from maildesk.intake.spool_file import Read, Record, Segment, orphans, read_records
from maildesk.metrics import Metrics
from maildesk.storage.db import is_postgres
from maildesk.storage.models import Inbound

log = logging.getLogger(__name__)

BATCH_RECORDS = 500  # per transaction
BATCH_BYTES = 16 * 1024 * 1024
SCAN_SECONDS = 5.0  # idle: look for segments a process that is gone left behind
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # while the database refuses; then 30 s


def store(engine: Engine, records: Sequence[Record]) -> dict[str, int]:
    """Insert the records as `new` inbound rows, once each; returns key -> inbound id
    (also for keys stored before, by an earlier replay of the same segment)."""
    rows = [
        {
            "received_at": datetime.fromtimestamp(r.received, UTC),
            "source": r.source,
            "envelope_from": r.envelope_from,
            "envelope_to": r.envelope_to,
            "raw": r.raw,
            "size": len(r.raw),
            "status": "new",
            "attempts": 0,
            "spool_key": r.key,
        }
        for r in records
    ]
    if not rows:
        return {}
    insert = pg_insert if is_postgres(engine) else sqlite_insert
    stmt = (
        insert(Inbound)
        .on_conflict_do_nothing(index_elements=["spool_key"])
        .returning(col(Inbound.id), col(Inbound.spool_key))
    )
    with engine.begin() as conn:
        ids = {str(k): i for i, k in conn.execute(stmt, rows) if i is not None}
        missing = [row["spool_key"] for row in rows if row["spool_key"] not in ids]
        if missing:  # stored by an earlier replay
            found = conn.execute(
                select(col(Inbound.id), col(Inbound.spool_key)).where(
                    col(Inbound.spool_key).in_(missing)
                )
            )
            ids.update({str(k): i for i, k in found if i is not None})
    return ids


@dataclass
class _Replayed:
    read: Read
    ids: dict[str, int]
    error: Exception | None = None


class Replayer:
    """Moves records from the segments (oldest first) into the database, wakes the
    pipeline, resolves the futures of callers waiting for an inbound id."""

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        on_stored: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._directory = directory
        self._on_stored = on_stored
        self._metrics = metrics
        self._segments: list[Segment] = []
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-replay")
        self._failures = 0
        self.replayed = 0

    def add(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._wake.set()

    def followed(self, instance: str) -> list[Segment]:
        """The open segments another process (`instance`) appends to."""
        return [
            s
            for s in self._segments
            if s.path.name.startswith(f"{instance}-") and not s.sealed and s.writer_fd is None
        ]

    def known(self, path: Path) -> Segment | None:
        return next((s for s in self._segments if s.path == path), None)

    def adopt_orphans(self) -> list[Segment]:
        """Segments in the directory that no live process writes and we do not know
        yet: left by a crash, a stop while the database was down, an intake process."""
        adopted = []
        for path in orphans(self._directory):
            if self.known(path) is None:
                segment = Segment.adopt(path)
                if segment is not None:
                    self.add(segment)
                    adopted.append(segment)
        return adopted

    def wake(self) -> None:
        self._wake.set()

    def waiter(self, key: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        return future

    def forget(self, key: str) -> None:
        self._waiters.pop(key, None)

    def backlog(self) -> int:
        """Durable bytes not yet in the database."""
        return sum(max(0, s.end - s.replayed) for s in self._segments)

    def idle(self) -> bool:
        return all(s.replayed >= s.end for s in self._segments)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            segment = self._next()
            if segment is None:
                self._wake.clear()
                if self._next() is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), SCAN_SECONDS)
                    if not self._wake.is_set():
                        self.adopt_orphans()  # a few stat/flock calls
                continue
            start, end = segment.replayed, segment.end
            done = await loop.run_in_executor(self._executor, self._replay, segment, start, end)
            if done.error is not None:
                await self._failed(done)
                continue
            self._recovered()
            self._advance(segment, done)

    def _next(self) -> Segment | None:
        """The oldest segment with records to replay; finished ones are removed."""
        for segment in list(self._segments):
            if segment.replayed < segment.end:
                return segment
            if segment.finished:
                self._segments.remove(segment)
                self._remove(segment)
        return None

    def _replay(self, segment: Segment, start: int, end: int) -> _Replayed:
        read = read_records(segment.fd, start, end, BATCH_RECORDS, BATCH_BYTES)
        try:
            return _Replayed(read, store(self._engine, read.records))
        except Exception as exc:  # the database refused: the records stay in the file
            return _Replayed(read, {}, exc)

    def _advance(self, segment: Segment, done: _Replayed) -> None:
        before = segment.records
        segment.records += len(done.read.records)
        segment.replayed = done.read.end
        self.replayed += len(done.read.records)
        if done.read.damage is not None:
            segment.damaged = True
            damage = done.read.damage
            after = (
                f"intact records resume at byte {damage.resumes_at}"
                if damage.resumes_at is not None
                else "nothing readable after it (a write cut short by a crash: "
                "its sender never got a 250 and sends again)"
            )
            log.error(
                "spool: %s: damaged record at byte %d (%s); the %d records before it "
                "are stored; %s; the file is kept as .bad",
                segment.path,
                damage.offset,
                damage.reason,
                before + len(done.read.records),
                after,
            )
        for key, row_id in done.ids.items():
            future = self._waiters.pop(key, None)
            if future is not None and not future.done():
                future.set_result(row_id)
        if done.ids and self._on_stored is not None:
            self._on_stored()
        if self._metrics is not None:
            smtp = sum(1 for r in done.read.records if r.source == "smtp")
            self._metrics.accepted.labels("smtp").inc(smtp)

    async def _failed(self, done: _Replayed) -> None:
        for record in done.read.records:  # they are retried from the file, not lost
            future = self._waiters.pop(record.key, None)
            if future is not None and not future.done():
                future.set_exception(done.error or RuntimeError("spool replay failed"))
        pause = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
        if self._failures == 0:
            log.error(
                "spool: cannot store mail in the database (%s); it stays in the spool "
                "and is retried every %.0f-%.0f s",
                _one_line(done.error),
                RETRY_SECONDS[0],
                RETRY_SECONDS[-1],
            )
        self._failures += 1
        await asyncio.sleep(pause)

    def _recovered(self) -> None:
        if self._failures:
            log.warning("spool: the database takes mail again after %d failures", self._failures)
            self._failures = 0

    def _remove(self, segment: Segment) -> None:
        try:
            segment.remove()  # a damaged one is kept as .bad (logged when found)
        except OSError as exc:
            log.error(
                "spool: cannot remove %s: %s (replayed again at the next start)", segment.path, exc
            )

    async def settle(self, timeout: float) -> bool:
        """Wait (up to `timeout`) until every durable record is in the database."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.idle():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def close(self) -> None:
        """Remove the finished segments, release the rest; fail whoever still waits."""
        for segment in self._segments:
            if segment.finished:
                self._remove(segment)
            else:
                segment.close()
        self._segments.clear()
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(RuntimeError("the spool stopped before storing the mail"))
        self._waiters.clear()
        self._executor.shutdown(wait=True)


def _one_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
