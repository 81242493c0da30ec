"""What the spam model learned about each mail, and the daemon learning its sure verdicts.

``MAILDESK_SPAM_LEARN=sure``: the first mail of a new ticket that came in live
(SMTP or IMAP, not `maildesk ingest`) and was scored in a sure band (ham or
spam) is learned as that verdict. Not "train on everything": unsure mail is
never learned from the filter's own guess, and a verdict that staff correct is
forgotten before their label is learned, so a mistake does not teach itself.

One KV row per message, ``spam-learned:<message.id>``, says what the model
holds for it:

* ``queued:ham`` / ``queued:spam``: a sure verdict, written in the pipeline's
  transaction; not in the model yet. The daemon's `SureLearner` learns such
  mails in batches, off the pipeline thread: one atomic write of the model file
  per batch, then the rows become
* ``ham`` / ``spam``: in the model with that label (a learned verdict, or a
  staff decision: `relearn`).

A staff decision (`relearn`, from `quarantine.mark_ticket`) that agrees with
what the model holds changes nothing; one that disagrees forgets the old label
and learns the new one in one write. A queued verdict the staff decided on
before the batch ran is never learned (the batch learns only rows still
queued, and takes back a mail whose row changed while it wrote the model).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from maildesk.core.parse import InboundMail, parse_mail
from maildesk.storage.db import read_only
from maildesk.storage.models import KV, Inbound, Message
from maildesk.worker import Worker

if TYPE_CHECKING:
    from maildesk.spam.live import LiveSpamFilter
    from maildesk.spam.model import SpamFilter

log = logging.getLogger(__name__)

PREFIX = "spam-learned:"
QUEUED = "queued:"
BATCH = 50  # mails per model write, at most FLUSH_SECONDS apart
FLUSH_SECONDS = 30.0
CHUNK = 500  # keys per database query

Label = Literal["ham", "spam"]


def learned_key(message_id: int) -> str:
    return f"{PREFIX}{message_id}"


def label_of(is_spam: bool) -> Label:
    return "spam" if is_spam else "ham"


@dataclass(frozen=True)
class Lesson:
    """A sure verdict to learn: the message row, its verdict, and the parsed mail
    (None after a restart: read back from the stored raw bytes)."""

    message_id: int
    is_spam: bool
    mail: InboundMail | None = None

    @property
    def queued(self) -> str:
        return QUEUED + label_of(self.is_spam)


def queue_lesson(session: Session, ticket_id: int, mail: InboundMail, is_spam: bool) -> Lesson:
    """In the pipeline's transaction: the new ticket's mail is to be learned as its verdict."""
    message_id = session.exec(
        select(Message.id).where(Message.ticket_id == ticket_id).order_by(col(Message.id))
    ).first()
    assert message_id is not None, "the pipeline stored the ticket's message"
    lesson = Lesson(message_id, is_spam, mail)
    session.add(KV(key=learned_key(message_id), value=lesson.queued))
    return lesson


def relearn(
    session: Session, spam_filter: SpamFilter, message_id: int, mail: InboundMail, is_spam: bool
) -> str:
    """A staff decision on a message, in the caller's transaction; says what the model did.

    The row is read for update: on PostgreSQL a batch being recorded waits, and on
    SQLite every writer already holds the database lock (BEGIN IMMEDIATE).
    """
    from maildesk.spam.tokenize import tokenize

    key = learned_key(message_id)
    row = session.exec(select(KV).where(KV.key == key).with_for_update()).first()
    label = label_of(is_spam)
    held = row.value if row is not None else None
    if held == label:
        return "model already had it"
    if held in ("ham", "spam"):
        spam_filter.relabel_tokens([tokenize(mail)], [held == "spam"], [is_spam])
        said = f"model forgot its {held} verdict and learned {label}"
    else:  # never learned, or a verdict still queued (the batch will skip it)
        spam_filter.learn_tokens([tokenize(mail)], [is_spam])
        said = "model learned it"
    row = row or KV(key=key, value=label)
    row.value = label
    session.add(row)
    return said


class SureLearner(Worker):
    """The daemon's batch learner of sure verdicts (MAILDESK_SPAM_LEARN=sure).

    The pipeline hands over lessons after its commit (`add`); `run_forever` learns
    them every ``batch`` mails or ``seconds``, whichever comes first, in a thread,
    and `flush` learns the rest at shutdown. Rows still queued from before a crash
    are picked up by `recover` at start.
    """

    name = "spam-learning"
    idle_seconds = 1.0

    def __init__(
        self,
        engine: Engine,
        live: LiveSpamFilter,
        batch: int = BATCH,
        seconds: float = FLUSH_SECONDS,
    ) -> None:
        super().__init__()
        self._engine = engine
        self._live = live
        self.batch = batch
        self.seconds = seconds
        self._pending: dict[int, Lesson] = {}
        self._since: float | None = None  # monotonic time of the oldest pending lesson
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def add(self, lessons: Sequence[Lesson]) -> None:
        """From the pipeline thread, after its transaction committed."""
        with self._lock:
            for lesson in lessons:
                self._pending[lesson.message_id] = lesson
            if self._pending and self._since is None:
                self._since = time.monotonic()

    def due(self) -> bool:
        with self._lock:
            if self._since is None:
                return False
            full = len(self._pending) >= self.batch
            return full or time.monotonic() - self._since >= self.seconds

    def recover(self) -> int:
        """Queue the verdicts left unlearned by the last run (crash, or stop cut short)."""
        with Session(read_only(self._engine)) as session:
            rows = session.exec(
                select(KV).where(
                    col(KV.key).startswith(PREFIX), col(KV.value).startswith(QUEUED)
                )
            ).all()
        lessons = []
        for row in rows:
            number = row.key.removeprefix(PREFIX)
            if number.isdigit():
                lessons.append(Lesson(int(number), row.value == QUEUED + "spam"))
        self.add(lessons)
        return len(lessons)

    async def run_once(self) -> None:
        """A failed batch stays queued (its rows) and is learned by a later round."""
        if self.due():
            await asyncio.to_thread(self.flush)

    def flush(self) -> int:
        """Learn every pending lesson still queued: one model write; returns how many."""
        with self._flushing:
            with self._lock:
                pending = list(self._pending.values())
                self._pending.clear()
                self._since = None
            learned = 0
            for start in range(0, len(pending), CHUNK):
                learned += self._learn(pending[start : start + CHUNK])
            return learned

    def _learn(self, pending: list[Lesson]) -> int:
        from maildesk.spam.model import SpamModelError
        from maildesk.spam.tokenize import tokenize

        lessons = self._still_queued(pending)
        if not lessons:
            return 0
        documents = [tokenize(mail) for _, mail in lessons]
        labels = [lesson.is_spam for lesson, _ in lessons]
        try:
            self._live.learn_tokens(documents, labels)
        except SpamModelError as exc:
            log.error("spam learning: %d verdicts not learned, model unusable: %s",
                      len(lessons), exc)
            return 0
        lost = self._record([lesson for lesson, _ in lessons])
        if lost:  # staff decided on these while the model was written: take them back
            back = [i for i, (lesson, _) in enumerate(lessons) if lesson.message_id in lost]
            self._live.forget_tokens([documents[i] for i in back], [labels[i] for i in back])
        spam = sum(labels)
        log.info("spam learning: learned %d sure verdicts (%d ham, %d spam), model %s",
                 len(lessons) - len(lost), len(lessons) - spam, spam,
                 self._live.current().model_version)
        return len(lessons) - len(lost)

    def _still_queued(self, pending: list[Lesson]) -> list[tuple[Lesson, InboundMail]]:
        """The lessons whose row still says queued, with their mails."""
        keys = [learned_key(lesson.message_id) for lesson in pending]
        with Session(read_only(self._engine)) as session:
            values = dict(
                session.exec(select(KV.key, KV.value).where(col(KV.key).in_(keys))).all()
            )
            lessons = [lesson for lesson in pending
                       if values.get(learned_key(lesson.message_id)) == lesson.queued]
            stored = self._stored_mails(
                session, [lesson.message_id for lesson in lessons if lesson.mail is None]
            )
        found = []
        for lesson in lessons:
            mail = lesson.mail or stored.get(lesson.message_id)
            if mail is not None:
                found.append((lesson, mail))
        return found

    @staticmethod
    def _stored_mails(session: Session, message_ids: list[int]) -> dict[int, InboundMail]:
        if not message_ids:
            return {}
        rows = session.exec(
            select(Message.id, Inbound.raw)
            .join(Inbound, col(Message.inbound_id) == col(Inbound.id))
            .where(col(Message.id).in_(message_ids))
        ).all()
        mails = {}
        for message_id, raw in rows:
            try:
                mails[int(message_id)] = parse_mail(bytes(raw))  # type: ignore[arg-type]
            except Exception as exc:  # parsed once already; a failure now only skips it
                log.warning("spam learning: message %s not learned: %s", message_id, exc)
        return mails

    def _record(self, lessons: list[Lesson]) -> set[int]:
        """Mark the rows learned; returns the messages whose row changed meanwhile."""
        lost: set[int] = set()
        with Session(self._engine) as session:
            for lesson in lessons:
                result = session.execute(
                    update(KV)
                    .where(
                        col(KV.key) == learned_key(lesson.message_id),
                        col(KV.value) == lesson.queued,
                    )
                    .values(value=label_of(lesson.is_spam))
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    lost.add(lesson.message_id)
            session.commit()
        return lost
