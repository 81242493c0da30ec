"""The durable intake spool: raw mail into an append-only file, then into the database.

`SpoolWriter.write` returns once the raw bytes are in a spool segment and fdatasync'ed
(mails arriving together share one write and one fsync: group commit), so an SMTP 250
never waits for the database or the pipeline, and a crash cannot lose the mail (DESIGN
invariant 1). The SMTP intake process (intake_process) runs a writer of its own;
`Spool` is a writer plus the replayer (spool_replay) that moves records into the
inbound table in big batches, idempotently, and wakes the pipeline. `Spool.accept`
also waits for that commit and returns the inbound row id (the IMAP poller and
`maildesk ingest` need it).

At start, and whenever idle, segments left by a process that is gone (a crash, or a
stop while the database was down) are replayed. Several daemons sharing one PostgreSQL
each have their own spool directory; spool keys carry a writer's instance id (a time
and random bits), so they never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Engine

from maildesk.intake.spool_file import SUFFIX, Segment, lock
from maildesk.intake.spool_replay import Replayer
from maildesk.intake.spool_writer import SpoolFull, SpoolWriter
from maildesk.metrics import Metrics

__all__ = ["Spool", "SpoolFull", "SpoolWriter", "spool_dir"]

log = logging.getLogger(__name__)

STOP_SECONDS = 3.0  # at stop, for what is durable to reach the database


def spool_dir(data_dir: Path) -> Path:
    return data_dir / "spool"


class Spool:
    """A writer and the replayer in this process: what the IMAP poller, `maildesk
    ingest` and tests use, and where the daemon replays the SMTP intake's segments."""

    def __init__(
        self,
        engine: Engine,
        on_stored: Callable[[], None] | None = None,
        directory: Path | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`directory` None: a private temporary one, for callers that only `accept`
        (which waits for the database commit), such as imports and tests."""
        self._temporary = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="maildesk-spool-"))
        self._writer = SpoolWriter(self.directory, self._durable)
        self._replayer = Replayer(engine, self.directory, on_stored, metrics)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Adopt what an earlier process left, then take mail."""
        self._writer.start()
        adopted = self._replayer.adopt_orphans()
        if adopted:
            log.info(
                "spool: replaying %d segment(s) (%d bytes) left by an earlier run",
                len(adopted),
                sum(s.end for s in adopted),
            )
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._replayer.run(), name="spool-replay")

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Finish the writes under way, give the replay `timeout` to store what is
        durable, then let go: what is left is replayed at the next start."""
        deadline = time.monotonic() + timeout
        await self._writer.stop()
        if self._task is not None:
            await self._replayer.settle(max(0.0, deadline - time.monotonic()))
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._replayer.close()
        if self._temporary:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only if empty: never drop a record
        elif any(self.directory.glob(f"*{SUFFIX}")):
            log.warning(
                "spool: mail not yet in the database stays in %s for the next start", self.directory
            )

    async def accept(
        self,
        raw: bytes,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
    ) -> int:
        """Store durably and wait until it is in the database; returns the inbound row id.
        Raises if either failed (a mail that reached the spool is still stored later:
        dedupe recognises the caller's retry)."""
        key, durable = self._writer.submit(raw, source, envelope_from, envelope_to)
        stored = self._replayer.waiter(key)
        try:
            await durable
        except BaseException:
            self._replayer.forget(key)
            raise
        return await stored

    def backlog_bytes(self) -> int:
        """Mail made durable in the spool files (answered 250) but not yet in the database."""
        return self._replayer.backlog()

    def follow(self, name: str, end: int) -> None:
        """The SMTP intake process made `name` durable up to `end`: replay it. A new
        name means its previous segments are finished (it appends to one at a time)."""
        path = self.directory / name
        segment = self._replayer.known(path)
        if segment is None:
            for old in self._replayer.followed(path.name.rsplit("-", 1)[0]):
                old.sealed = True
            segment = Segment.follow(path)
            self._replayer.add(segment)
        segment.end = max(segment.end, end)
        self._replayer.wake()

    def release(self, instance: str) -> None:
        """The intake process `instance` is gone: its segments end where the files do
        (records made durable just before it died included; a torn tail is detected)."""
        for segment in self._replayer.followed(instance):
            if lock(segment.fd):
                segment.end = max(segment.end, segment.path.stat().st_size)
                segment.sealed = True
        self._replayer.wake()

    def _durable(self, segment: Segment) -> None:
        if self._replayer.known(segment.path) is None:
            self._replayer.add(segment)
        self._replayer.wake()
