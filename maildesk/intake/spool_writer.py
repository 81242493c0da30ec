"""The spool's writer: mail appended to this process's own segments, in groups of one
write and one fdatasync each (group commit). Used by the SMTP intake process and, with
the replayer, by `Spool` (spool.py). No database here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from maildesk.errors import TransientError
from maildesk.intake.spool_file import SUFFIX, Record, Segment, encode

log = logging.getLogger(__name__)

MAX_GROUP = 256  # mails per write + fdatasync
MAX_GROUP_BYTES = 8 * 1024 * 1024  # (at least one mail)
SEGMENT_BYTES = 16 * 1024 * 1024  # a new segment after this many
MAX_SPOOL_BYTES = 1024 * 1024 * 1024  # segments on disk: beyond, 451 until they drain


class SpoolFull(TransientError):
    """The database has not taken the spooled mail for a while; refuse more for now."""


@dataclass
class _Pending:
    key: str
    raw: bytes
    source: str
    envelope_from: str | None
    envelope_to: str
    future: asyncio.Future[None]


class SpoolWriter:
    """Appends records to this process's own segments, in groups, one fdatasync each.
    `on_durable(segment)` is called on the loop after each group is durable."""

    def __init__(self, directory: Path, on_durable: Callable[[Segment], None]) -> None:
        self.directory = directory
        self._on_durable = on_durable
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: stop
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-write")
        self._active: Segment | None = None
        self.instance = f"{int(time.time()):08x}{secrets.token_hex(4)}"
        self._seq = itertools.count(1)
        self._numbers = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._size = (0.0, 0)  # (monotonic time, bytes): the spool's size, looked at lately

    def start(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spool-writer")

    async def stop(self) -> None:
        """Write what is queued, then end; the last segment is sealed (never appended to
        again), and stays until replayed."""
        if self._task is not None:
            self._closing = True
            self._queue.put_nowait(None)
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._active is not None:
            self._active.seal()
        self._thread.shutdown(wait=True)

    async def write(
        self,
        raw: bytes,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
    ) -> str:
        """Store durably in the spool; returns the spool key. Raises if that failed."""
        key, durable = self.submit(raw, source, envelope_from, envelope_to)
        await durable
        return key

    def submit(
        self, raw: bytes, source: str, envelope_from: str | None, envelope_to: Sequence[str]
    ) -> tuple[str, asyncio.Future[None]]:
        """Queue one mail for the next group: its key and a future set once durable."""
        if self._closing or self._task is None or self._task.done():
            raise RuntimeError("spool writer is not running")
        self._check_size()
        key = f"{self.instance}-{next(self._seq)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sender = None if envelope_from is None else _text(envelope_from, 500)
        to = _text(",".join(envelope_to), 1_000_000)
        self._queue.put_nowait(_Pending(key, raw, _text(source, 200), sender, to, future))
        return key, future

    def _check_size(self) -> None:
        """A cap on the spool: if the database does not take mail for long, refuse more
        (451, the clients retry) rather than fill the disk. Looked at once a second."""
        checked, size = self._size
        if time.monotonic() - checked > 1.0:
            before = size
            size = sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}"))
            self._size = (time.monotonic(), size)
            if size > MAX_SPOOL_BYTES >= before:
                log.error(
                    "spool: %d MiB not yet in the database (cap %d MiB): answering 451 "
                    "until it drains",
                    size >> 20,
                    MAX_SPOOL_BYTES >> 20,
                )
        if size > MAX_SPOOL_BYTES:
            raise SpoolFull("the spool is full: the database is not taking mail")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = False
        while not last:
            group, last = await self._take_group()
            if not group:
                continue
            try:
                segment = await self._segment(loop)
                segment.end = await loop.run_in_executor(self._thread, _append, segment, group)
            except Exception as exc:
                log.error("spool: could not store %d mail(s): %s", len(group), exc)
                if self._active is not None:
                    self._active.seal()  # nothing after its durable end is trusted
                    self._active = None
                _fail(group, exc)
                continue
            self._on_durable(segment)
            for item in group:
                if not item.future.done():
                    item.future.set_result(None)

    async def _take_group(self) -> tuple[list[_Pending], bool]:
        """Every mail waiting (up to the caps) for one write; True: the stop came."""
        first = await self._queue.get()
        if first is None:
            return [], True
        group, size = [first], len(first.raw)
        while len(group) < MAX_GROUP and size < MAX_GROUP_BYTES and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return group, True
            group.append(item)
            size += len(item.raw)
        return group, False

    async def _segment(self, loop: asyncio.AbstractEventLoop) -> Segment:
        """The segment to append to: a new one when there is none or it is full."""
        active = self._active
        if active is not None and not active.sealed and active.end < SEGMENT_BYTES:
            return active
        if active is not None:
            active.seal()
        path = self.directory / f"{self.instance}-{next(self._numbers):06d}{SUFFIX}"
        self._active = await loop.run_in_executor(self._thread, Segment.create, path)
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
