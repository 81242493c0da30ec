"""The durable intake spool: raw mail into the inbound table with group commit.

`accept` returns only after the raw bytes are committed (SQLite: WAL with
synchronous=FULL; PostgreSQL: a normal commit), so an SMTP 250 or an IMAP
move happens only for mail that a crash cannot lose (DESIGN invariant 1).
Mails arriving together share one transaction and so one fsync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, insert
from sqlmodel import col

from maildesk.storage.models import Inbound, utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass
class _Pending:
    raw: bytes
    source: str
    envelope_from: str | None
    envelope_to: str
    future: asyncio.Future[int]


class Spool:
    def __init__(self, engine: Engine, on_stored: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._on_stored = on_stored
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spool-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def accept(
        self,
        raw: bytes,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
    ) -> int:
        """Store durably; returns the inbound row id. Raises if the store failed."""
        if self._task is None or self._task.done():
            raise RuntimeError("spool writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(raw, source, envelope_from, ",".join(envelope_to), future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                ids = await loop.run_in_executor(self._executor, self._write, batch)
            except Exception as exc:
                log.error("spool: could not store %d mail(s): %s", len(batch), exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, row_id in zip(batch, ids, strict=True):
                if not item.future.done():
                    item.future.set_result(row_id)
            if self._on_stored:
                self._on_stored()

    def _write(self, batch: list[_Pending]) -> list[int]:
        now = utcnow()
        rows = [
            {
                "received_at": now,
                "source": item.source[:200],
                "envelope_from": item.envelope_from,
                "envelope_to": item.envelope_to,
                "raw": item.raw,
                "size": len(item.raw),
                "status": "new",
                "attempts": 0,
            }
            for item in batch
        ]
        with self._engine.begin() as conn:
            result = conn.execute(insert(Inbound).returning(col(Inbound.id)), rows)
            ids = [int(r[0] or 0) for r in result]
        return ids
