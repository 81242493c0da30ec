"""The daemon's learning of sure verdicts (maildesk.work.spamlearn): batches of one model write,
staff decisions that forget a learned verdict first, and nothing ever counted twice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from maildesk.core.parse import InboundMail, parse_mail
from maildesk.spam import SpamFilter, SpamThresholds
from maildesk.spam.live import LiveSpamFilter
from maildesk.spam.tokenize import tokenize
from maildesk.storage.db import make_engine, upgrade
from maildesk.storage.models import KV, Inbound, Message, Ticket
from maildesk.work.spamlearn import Lesson, SureLearner, queue_lesson, relearn
from tests.mailkit import make_mail

HAM = [
    "Hi team, the build on the staging server failed again after the kernel patch.",
    "Meeting notes: we agreed to move the release to Thursday and review the parser patch.",
    "Hello, my invoice for March is attached as discussed. Could you confirm the date?",
]
SPAM = [
    "CONGRATULATIONS! You have been selected to receive a FREE prize. Click here now!!!",
    "Lose weight fast with our miracle pills. Order now and get a free bonus bottle.",
    "Make money fast from home! Earn $5000 per week with this amazing opportunity.",
]


@dataclass
class Desk:
    engine: Engine
    live: LiveSpamFilter
    path: Path

    def writes(self) -> int:
        """Saves of the model file so far (every save counts one update)."""
        with np.load(self.path, allow_pickle=False) as data:
            return int(data["updates"])

    def model(self) -> SpamFilter:
        return SpamFilter.load(self.path, SpamThresholds())

    def store(self, body: str, number: int) -> tuple[int, InboundMail]:
        """A ticket with its first mail, as the pipeline stores it: the message id, the mail."""
        raw = make_mail(sender=f"c{number}@example.org", subject=f"Mail {number}", body=body)
        with Session(self.engine) as session:
            inbound = Inbound(source="smtp", raw=raw, size=len(raw), status="done")
            ticket = Ticket(subject=f"Mail {number}", requester=f"c{number}@example.org")
            session.add(inbound)
            session.add(ticket)
            session.flush()
            assert ticket.id is not None
            message = Message(ticket_id=ticket.id, inbound_id=inbound.id, direction="in",
                              kind="customer", dedupe_key=f"m{number}")
            session.add(message)
            session.commit()
            assert message.id is not None
            return ticket.id, parse_mail(raw)

    def queue(self, ticket_id: int, mail: InboundMail, is_spam: bool) -> Lesson:
        with Session(self.engine) as session:
            lesson = queue_lesson(session, ticket_id, mail, is_spam)
            session.commit()
        return lesson

    def row(self, lesson: Lesson) -> str | None:
        with Session(self.engine) as session:
            kv = session.get(KV, f"spam-learned:{lesson.message_id}")
            return kv.value if kv else None

    def staff(self, lesson: Lesson, mail: InboundMail, is_spam: bool) -> str:
        """A staff decision, as mark_ticket makes it (through the daemon's filter)."""
        with Session(self.engine) as session:
            said = relearn(session, self.live.current(), lesson.message_id, mail, is_spam)
            session.commit()
        return said


@pytest.fixture
def desk(tmp_path: Path, database_url: str) -> Iterator[Desk]:
    """SQLite and PostgreSQL: the rows are what keeps a verdict from being counted twice."""
    engine = make_engine(database_url)
    upgrade(engine)
    path = tmp_path / "spam-model.npz"
    trainer = SpamFilter(path=path)
    mails = [parse_mail(make_mail(body=b)) for b in (*HAM, *SPAM)]
    trainer.learn(mails, [False] * len(HAM) + [True] * len(SPAM))
    yield Desk(engine, LiveSpamFilter(path, SpamThresholds()), path)
    engine.dispose()


def test_a_batch_is_learned_in_one_write_when_full_and_rows_say_what(desk: Desk) -> None:
    learner = SureLearner(desk.engine, desk.live, batch=3, seconds=3600)
    lessons = [desk.queue(*desk.store(body, n), n % 2 == 1) for n, body in
               enumerate(["printer broke", "cheap pills now", "invoice question"])]
    assert [desk.row(lesson) for lesson in lessons] == ["queued:ham", "queued:spam", "queued:ham"]
    before, writes = desk.model().class_counts(), desk.writes()

    learner.add(lessons[:2])
    assert not learner.due()
    learner.add(lessons[2:])
    assert learner.due()
    assert learner.flush() == 3

    assert desk.writes() == writes + 1  # one atomic replace for the whole batch
    assert desk.model().class_counts() == (before[0] + 2, before[1] + 1)
    assert [desk.row(lesson) for lesson in lessons] == ["ham", "spam", "ham"]
    assert not learner.due()


def test_a_lone_verdict_waits_for_the_interval(desk: Desk) -> None:
    lesson = desk.queue(*desk.store("printer broke", 1), False)
    waiting = SureLearner(desk.engine, desk.live, batch=50, seconds=3600)
    waiting.add([lesson])
    assert not waiting.due()
    prompt = SureLearner(desk.engine, desk.live, batch=50, seconds=0)
    prompt.add([lesson])
    assert prompt.due()


def test_nothing_is_learned_twice(desk: Desk) -> None:
    learner = SureLearner(desk.engine, desk.live, batch=50, seconds=0)
    lesson = desk.queue(*desk.store("cheap pills now", 1), True)
    learner.add([lesson, lesson])
    assert learner.flush() == 1
    counts, writes = desk.model().class_counts(), desk.writes()
    learner.add([lesson])  # handed over again: the row is no longer queued
    assert learner.flush() == 0
    assert learner.recover() == 0
    assert learner.flush() == 0
    assert desk.model().class_counts() == counts and desk.writes() == writes


def test_staff_correction_forgets_the_learned_verdict_then_learns_the_label(desk: Desk) -> None:
    ticket, mail = desk.store("Please call me back about the order, cheap pills", 1)
    tokens = tokenize(mail)
    base_ham, base_spam = desk.model().token_counts(tokens)
    base = desk.model().class_counts()
    lesson = desk.queue(ticket, mail, True)
    learner = SureLearner(desk.engine, desk.live, batch=1, seconds=3600)
    learner.add([lesson])
    learner.flush()
    ham, spam = desk.model().token_counts(tokens)
    assert spam == [s + 1 for s in base_spam] and ham == base_ham

    assert desk.staff(lesson, mail, False) == "model forgot its spam verdict and learned ham"
    ham, spam = desk.model().token_counts(tokens)
    assert spam == base_spam  # the verdict is gone
    assert ham == [h + 1 for h in base_ham]
    assert desk.model().class_counts() == (base[0] + 1, base[1])
    assert desk.row(lesson) == "ham"

    writes = desk.writes()  # the same decision again: nothing changes
    assert desk.staff(lesson, mail, False) == "model already had it"
    assert desk.writes() == writes and desk.model().token_counts(tokens) == (ham, spam)


def test_a_decision_that_agrees_with_the_learned_verdict_changes_nothing(desk: Desk) -> None:
    ticket, mail = desk.store("printer broke", 1)
    lesson = desk.queue(ticket, mail, False)
    learner = SureLearner(desk.engine, desk.live)
    learner.add([lesson])
    learner.flush()
    counts, writes = desk.model().class_counts(), desk.writes()
    assert desk.staff(lesson, mail, False) == "model already had it"
    assert desk.model().class_counts() == counts and desk.writes() == writes
    assert desk.row(lesson) == "ham"


def test_staff_before_the_batch_the_verdict_is_never_learned(desk: Desk) -> None:
    ticket, mail = desk.store("Please call me back about the order", 1)
    base = desk.model().class_counts()
    lesson = desk.queue(ticket, mail, True)
    learner = SureLearner(desk.engine, desk.live)
    learner.add([lesson])
    assert desk.staff(lesson, mail, False) == "model learned it"
    assert learner.flush() == 0
    assert desk.model().class_counts() == (base[0] + 1, base[1])
    assert desk.row(lesson) == "ham"


def test_held_mail_never_learned_is_learned_once_by_staff(desk: Desk) -> None:
    _, mail = desk.store("Maybe spam, maybe not", 1)
    base = desk.model().class_counts()
    lesson = Lesson(1, False, mail)  # the first message; unsure, so no row was queued
    assert desk.row(lesson) is None
    assert desk.staff(lesson, mail, False) == "model learned it"
    assert desk.staff(lesson, mail, False) == "model already had it"
    assert desk.model().class_counts() == (base[0] + 1, base[1])


def test_verdicts_left_queued_by_a_crash_are_learned_at_the_next_start(desk: Desk) -> None:
    lessons = [desk.queue(*desk.store(body, n), n == 1) for n, body in
               enumerate(["printer broke", "cheap pills now"])]
    base = desk.model().class_counts()
    # The daemon died before its batch: a new one finds the rows, reads the stored mails.
    learner = SureLearner(desk.engine, LiveSpamFilter(desk.path, SpamThresholds()))
    assert learner.recover() == 2
    assert learner.flush() == 2
    assert desk.model().class_counts() == (base[0] + 1, base[1] + 1)
    assert [desk.row(lesson) for lesson in lessons] == ["ham", "spam"]


def test_a_verdict_rolled_back_with_its_mail_is_dropped(desk: Desk) -> None:
    ticket, mail = desk.store("printer broke", 1)
    with Session(desk.engine) as session:
        lesson = queue_lesson(session, ticket, mail, False)
        session.rollback()
    learner = SureLearner(desk.engine, desk.live, seconds=0)
    learner.add([lesson])
    writes = desk.writes()
    assert learner.flush() == 0
    assert desk.writes() == writes and desk.row(lesson) is None
