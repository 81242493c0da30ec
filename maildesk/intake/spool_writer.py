"""The spool's writer: mail appended to this process's own segments, in groups of one
write and one fdatasync each (group commit). Used by the SMTP intake process and, with
the replayer, by `Spool` (spool.py). No database here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
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
    `on_durable(segment)` is called on the loop after each group is durable.

    One thread writes: it takes every mail waiting (up to the caps) as a group, appends
    and syncs it, and hands the group back to the loop in one call. While it syncs, the
    loop reads the next mails, which form the next group."""

    def __init__(self, directory: Path, on_durable: Callable[[Segment], None]) -> None:
        self.directory = directory
        self._on_durable = on_durable
        self._waiting: deque[_Pending] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active: Segment | None = None
        self.instance = f"{int(time.time()):08x}{secrets.token_hex(4)}"
        self._seq = itertools.count(1)
        self._numbers = itertools.count(1)
        self._closing = False
        self._size = (0.0, 0)  # (monotonic time, bytes): the spool's size, looked at lately

    def start(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="spool-write", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Write what is queued, then end; the last segment is sealed (never appended to
        again), and stays until replayed."""
        thread = self._thread
        if thread is not None:
            with self._wake:
                self._closing = True
                self._wake.notify()
            # The thread's last answers were queued on the loop before the join returns,
            # so they have run by the time this await does.
            await asyncio.to_thread(thread.join)
            self._thread = None
        if self._active is not None:
            self._active.seal()

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
        if self._closing or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("spool writer is not running")
        self._check_size()
        key = f"{self.instance}-{next(self._seq)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sender = None if envelope_from is None else _text(envelope_from, 500)
        to = _text(",".join(envelope_to), 1_000_000)
        item = _Pending(key, raw, _text(source, 200), sender, to, future)
        with self._wake:
            self._waiting.append(item)
            self._wake.notify()
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

    def _run(self) -> None:
        """The writer thread: a group at a time until the stop, then what is left."""
        assert self._loop is not None
        while True:
            group = self._take_group()
            if not group:
                return
            try:
                segment = self._segment()
                segment.end = _append(segment, group)
            except Exception as exc:
                log.error("spool: could not store %d mail(s): %s", len(group), exc)
                if self._active is not None:
                    self._active.seal()  # nothing after its durable end is trusted
                    self._active = None
                self._loop.call_soon_threadsafe(_fail, group, exc)
                continue
            self._loop.call_soon_threadsafe(self._durable, segment, group)

    def _take_group(self) -> list[_Pending]:
        """Every mail waiting (up to the caps) for one write; [] once stopped and empty."""
        with self._wake:
            while not self._waiting and not self._closing:
                self._wake.wait()
            group: list[_Pending] = []
            size = 0
            while self._waiting and len(group) < MAX_GROUP and size < MAX_GROUP_BYTES:
                item = self._waiting.popleft()
                group.append(item)
                size += len(item.raw)
            return group

    def _segment(self) -> Segment:
        """In the writer thread: the segment to append to, a new one when there is none
        or it is full."""
        active = self._active
        if active is not None and not active.sealed and active.end < SEGMENT_BYTES:
            return active
        if active is not None:
            active.seal()
        path = self.directory / f"{self.instance}-{next(self._numbers):06d}{SUFFIX}"
        self._active = Segment.create(path)
        return self._active

    def _durable(self, segment: Segment, group: list[_Pending]) -> None:
        """On the loop: report the segment's new end, then answer the group."""
        self._on_durable(segment)
        for item in group:
            if not item.future.done():
                item.future.set_result(None)


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
