"""The durable intake spool: raw mail into an append-only file, then into the database.

`write` returns once the raw bytes are in a spool segment and fdatasync'ed (mails
arriving together share one write and one fsync: group commit), so an SMTP 250 never
waits for the database or the pipeline, and a crash cannot lose the mail (DESIGN
invariant 1). A replayer moves the records into the inbound table in big batches,
idempotently (see spool_replay), and wakes the pipeline. `accept` also waits for that
commit and returns the inbound row id (the IMAP poller and `maildesk ingest` need it).

At start, segments left by a process that is gone (a crash, or a stop while the
database was down) are replayed first. Several daemons sharing one PostgreSQL each have
their own spool directory; spool keys carry an instance id, so they never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from maildesk.errors import TransientError
from maildesk.spool_file import SUFFIX, Record, Segment, encode, orphans
from maildesk.spool_replay import Replayer

log = logging.getLogger(__name__)

MAX_GROUP = 256  # mails per write + fdatasync
MAX_GROUP_BYTES = 8 * 1024 * 1024  # (at least one mail)
SEGMENT_BYTES = 16 * 1024 * 1024  # a new segment after this many
MAX_BACKLOG_BYTES = 1024 * 1024 * 1024  # not yet in the database: then 451, until it drains
STOP_SECONDS = 3.0  # at stop, for what is durable to reach the database


def spool_dir(data_dir: Path) -> Path:
    return data_dir / "spool"


@dataclass
class _Pending:
    key: str
    raw: bytes
    source: str
    envelope_from: str | None
    envelope_to: str
    future: asyncio.Future[None]


class SpoolFull(TransientError):
    """The database has not taken the spooled mail for a while; refuse more for now."""


class Spool:
    def __init__(
        self,
        engine: Engine,
        on_stored: Callable[[], None] | None = None,
        directory: Path | None = None,
    ) -> None:
        """`directory` None: a private temporary one, for callers that only `accept`
        (which waits for the database commit), such as imports and tests."""
        self._directory = directory
        self._temporary = directory is None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: stop
        self._closing = False
        self._queued_bytes = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-write")
        self._replayer = Replayer(engine, on_stored)
        self._active: Segment | None = None
        self._instance = f"{int(time.time()):08x}{secrets.token_hex(4)}"
        self._seq = itertools.count(1)
        self._segments = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._full_logged = False

    @property
    def directory(self) -> Path:
        assert self._directory is not None, "the spool is not started"
        return self._directory

    def start(self) -> None:
        """Adopt what an earlier process left, then take mail."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="maildesk-spool-"))
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        adopted = [s for s in map(Segment.adopt, orphans(self._directory)) if s is not None]
        for segment in adopted:
            self._replayer.add(segment)
        if adopted:
            log.info(
                "spool: replaying %d segment(s) (%d bytes) left by an earlier run",
                len(adopted),
                sum(s.end for s in adopted),
            )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_forever(), name="spool-writer"),
            loop.create_task(self._replayer.run(), name="spool-replay"),
        ]

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Finish the writes under way, give the replay `timeout` to store what is
        durable, then let go: what is left is replayed at the next start."""
        deadline = time.monotonic() + timeout
        if self._tasks:
            self._closing = True
            self._queue.put_nowait(None)  # the writer finishes what is queued, then ends
            writer, replay = self._tasks
            await asyncio.gather(writer, return_exceptions=True)
            if self._active is not None:
                self._active.seal()
            await self._replayer.settle(max(0.0, deadline - time.monotonic()))
            replay.cancel()
            await asyncio.gather(replay, return_exceptions=True)
            self._tasks = []
        self._writer.shutdown(wait=True)
        self._replayer.close()
        if self._temporary and self._directory is not None:
            with contextlib.suppress(OSError):
                self._directory.rmdir()  # only if empty: never drop a record
        elif self._directory is not None and any(self._directory.glob(f"*{SUFFIX}")):
            log.warning(
                "spool: mail not yet in the database stays in %s for the next start",
                self._directory,
            )

    async def write(
        self,
        raw: bytes,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
    ) -> str:
        """Store durably in the spool; returns the spool key. Raises if that failed."""
        key, durable = self._submit(raw, source, envelope_from, envelope_to)
        await durable
        return key

    async def accept(
        self,
        raw: bytes,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
    ) -> int:
        """Store durably and wait until it is in the database; returns the inbound row id.
        Raises if either failed (a spooled mail is still stored later: dedupe handles
        the caller's retry)."""
        key, durable = self._submit(raw, source, envelope_from, envelope_to)
        stored = self._replayer.waiter(key)
        try:
            await durable
        except BaseException:
            self._replayer.forget(key)
            raise
        return await stored

    def _submit(
        self, raw: bytes, source: str, envelope_from: str | None, envelope_to: Sequence[str]
    ) -> tuple[str, asyncio.Future[None]]:
        if self._closing or not self._tasks or self._tasks[0].done():
            raise RuntimeError("spool writer is not running")
        self._check_backlog()
        key = f"{self._instance}-{next(self._seq)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = _Pending(
            key,
            raw,
            _text(source, 200),
            None if envelope_from is None else _text(envelope_from, 500),
            _text(",".join(envelope_to), 1_000_000),
            future,
        )
        self._queue.put_nowait(item)
        self._queued_bytes += len(raw)
        return key, future

    def _check_backlog(self) -> None:
        backlog = self._replayer.backlog() + self._queued_bytes
        if backlog <= MAX_BACKLOG_BYTES:
            self._full_logged = False
            return
        if not self._full_logged:
            log.error(
                "spool: %d MiB not yet in the database (cap %d MiB): answering 451 until it drains",
                backlog >> 20,
                MAX_BACKLOG_BYTES >> 20,
            )
            self._full_logged = True
        raise SpoolFull("the spool is full: the database is not taking mail")

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        last = False
        while not last:
            group, last = await self._take_group()
            if not group:
                continue
            try:
                segment = await self._segment(loop)
                segment.end = await loop.run_in_executor(self._writer, _append, segment, group)
            except Exception as exc:
                log.error("spool: could not store %d mail(s): %s", len(group), exc)
                if self._active is not None:
                    self._active.seal()  # nothing after its durable end is trusted
                    self._active = None
                _fail(group, exc)
                continue
            for item in group:
                if not item.future.done():
                    item.future.set_result(None)
            self._replayer.wake()

    async def _take_group(self) -> tuple[list[_Pending], bool]:
        """Every mail waiting (up to the caps) for one write; True: the stop came."""
        first = await self._queue.get()
        if first is None:
            return [], True
        group, size = [first], len(first.raw)
        while len(group) < MAX_GROUP and size < MAX_GROUP_BYTES and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queued_bytes -= size
                return group, True
            group.append(item)
            size += len(item.raw)
        self._queued_bytes -= size
        return group, False

    async def _segment(self, loop: asyncio.AbstractEventLoop) -> Segment:
        """The segment to append to: a new one when there is none or it is full."""
        active = self._active
        if active is not None and not active.sealed and active.end < SEGMENT_BYTES:
            return active
        if active is not None:
            active.seal()
        path = self.directory / f"{self._instance}-{next(self._segments):06d}{SUFFIX}"
        self._active = await loop.run_in_executor(self._writer, Segment.create, path)
        self._replayer.add(self._active)
        return self._active


def _append(segment: Segment, group: list[_Pending]) -> int:
    """In the writer thread: encode the group (one receive time) and append it."""
    now = time.time()
    data = b"".join(
        encode(Record(p.key, now, p.source, p.envelope_from, p.envelope_to, p.raw)) for p in group
    )
    return segment.append(data)


def _fail(group: list[_Pending], exc: Exception) -> None:
    for item in group:
        if not item.future.done():
            item.future.set_exception(exc)


def _text(value: str, limit: int) -> str:
    """Metadata any database stores: valid UTF-8, no NUL, within the column's size."""
    clean = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "")
    return clean[:limit]
