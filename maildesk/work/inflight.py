"""The mails the pipeline has read and sent to the parsers, until their commit
(maildesk.work.processor): in arrival order, at most two batches or 32 MiB ahead, and
which of them may be committed now. A mail that answers one still being parsed waits
for it, so it finds the original's ticket."""

from __future__ import annotations

import asyncio
import re

from maildesk.core.parse import InboundMail
from maildesk.work.parsepool import ParseFailure, ParserPool

BATCH = 100  # mails the pipeline reads (and sends to the parsers) together
# It reads more while fewer mails than this wait for their commit (two batches) and
# they are smaller than this in all (huge mails).
AHEAD_MAILS = 2 * BATCH
AHEAD_BYTES = 32 * 1024 * 1024


_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)


def raw_message_id(raw: bytes) -> str | None:
    """The Message-ID of a mail not parsed yet (header section only; None if absent)."""
    ends = [e for e in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if e >= 0]
    found = _MESSAGE_ID_RE.search(raw[: min(ends) if ends else 65536])
    return found.group(1).decode("ascii", "replace") if found else None


def _replies_to(parsed: InboundMail | ParseFailure, parsing: dict[str, int], me: int) -> bool:
    """True while a mail that arrived before this one, and that this one answers, is
    still being parsed: this one waits, so it finds the original's ticket."""
    if isinstance(parsed, ParseFailure):
        return False
    refs = (*parsed.in_reply_to, *parsed.references)
    return any(parsing.get(ref, me) < me for ref in refs)


class Inflight:
    """The rows being parsed or waiting for their commit, in arrival order."""

    def __init__(self) -> None:
        self.after = 0  # the last row id read
        self.waiting: list[int] = []
        self._sizes: dict[int, int] = {}  # of the waiting mails
        self._parses: dict[int, asyncio.Future[InboundMail | ParseFailure]] = {}
        self._message_ids: dict[int, str | None] = {}

    def add(self, rows: list[tuple[int, bytes]], parser: ParserPool) -> None:
        for i, raw in rows:
            self._parses[i] = asyncio.ensure_future(parser.parse(raw))
            self._message_ids[i] = raw_message_id(raw)
            self._sizes[i] = len(raw)
            self.waiting.append(i)
            self.after = i

    def wants_more(self) -> bool:
        return len(self.waiting) < AHEAD_MAILS and sum(self._sizes.values()) < AHEAD_BYTES

    def ready(self, limit: int) -> list[tuple[int, InboundMail | ParseFailure]]:
        """At most `limit` parsed rows that may be committed now (taken out of `waiting`)."""
        parsing = {
            mid: i
            for i in self.waiting
            if not self._parses[i].done() and (mid := self._message_ids[i]) is not None
        }
        ready = [
            i
            for i in self.waiting
            if self._parses[i].done() and not _replies_to(self._parses[i].result(), parsing, i)
        ][:limit]
        taken = set(ready)
        self.waiting = [i for i in self.waiting if i not in taken]
        return [(i, self._take(i)) for i in ready]

    def unfinished(self) -> list[asyncio.Future[InboundMail | ParseFailure]]:
        return [self._parses[i] for i in self.waiting if not self._parses[i].done()]

    def _take(self, i: int) -> InboundMail | ParseFailure:
        del self._message_ids[i]
        del self._sizes[i]
        return self._parses.pop(i).result()
