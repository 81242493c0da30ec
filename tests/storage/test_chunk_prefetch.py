"""A chunk of mails reads its senders' facts and the staff's notification counts once,
before its first mail (maildesk.storage.prefetch.prefetch_chunk). The guards must see
exactly what they saw when each mail asked for itself: what earlier mails of the same
chunk wrote, and what was stored before it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from maildesk.config.runtime import Runtime, load_runtime
from maildesk.config.settings import load_settings
from maildesk.storage.db import make_engine, upgrade
from tests.conftest import REPO
from tests.mailkit import make_mail
from tests.pipelinekit import feed

World = Callable[..., tuple[Engine, Runtime]]


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    engines: list[Engine] = []

    def make(**settings: Any) -> tuple[Engine, Runtime]:
        engine = make_engine(database_url)
        upgrade(engine)
        engines.append(engine)
        loaded = load_settings(
            data_dir=tmp_path, rules=REPO / "rules.yaml", sla=REPO / "sla.yaml",
            templates=REPO / "templates", **settings,
        )
        return engine, load_runtime(loaded)

    yield make
    for engine in engines:
        engine.dispose()


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def outbox_kinds(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("select kind, count(*) from outbox group by kind"))
        return {str(kind): int(n) for kind, n in rows}


def feed_one_chunk(engine: Engine, runtime: Runtime, *mails: bytes) -> None:
    """One drain; the mails must have gone through as one chunk (one `now`)."""
    before = scalar(engine, "select coalesce(max(id), 0) from inbound")
    feed(engine, runtime, *mails)
    chunks = scalar(
        engine, f"select count(distinct processed_at) from inbound where id > {before}"
    )
    assert chunks == 1, "the mails were not handled in one chunk: the test proves nothing"


def test_a_sender_opening_too_many_tickets_within_one_chunk_is_stopped(world: World) -> None:
    engine, runtime = world(new_tickets_per_sender_per_hour=3)
    feed_one_chunk(engine, runtime, *[
        make_mail(sender="loop@example.org", subject=f"Question {n}",
                  body=f"Different question number {n}")
        for n in range(6)
    ])
    assert scalar(engine, "select count(*) from ticket") == 3
    appended = "select count(*) from message where ticket_id = 3 and direction = 'in'"
    assert scalar(engine, appended) == 4
    kinds = outbox_kinds(engine)
    assert kinds.get("alert_storm") == 1 and kinds.get("confirmation") == 3, kinds


def test_the_same_mail_twice_within_one_chunk_is_one_ticket(world: World) -> None:
    engine, runtime = world()
    feed_one_chunk(engine, runtime, *[
        make_mail(sender="vacation@example.org", subject="Out of office",
                  body="I am away until Monday.")
        for _ in range(2)
    ])
    assert scalar(engine, "select count(*) from ticket") == 1
    assert scalar(engine, "select count(*) from message where direction = 'in'") == 2
    assert outbox_kinds(engine).get("confirmation") == 1


def test_the_hourly_notification_cap_counts_what_was_stored_and_the_chunk(
    world: World,
) -> None:
    engine, runtime = world(notify_limit_per_hour=2)
    feed(engine, runtime, make_mail(sender="first@example.org", subject="First question"))
    stored = outbox_kinds(engine).get("notification", 0)
    assert stored >= 1
    feed_one_chunk(engine, runtime, *[
        make_mail(sender=f"customer{n}@example.org", subject=f"Question {n}")
        for n in range(5)
    ])
    with engine.connect() as conn:
        rows = conn.execute(text(
            "select rcpt, kind, count(*) from outbox"
            " where kind in ('notification', 'capped_hour') group by rcpt, kind"
        ))
        got = {(str(rcpt), str(kind)): int(n) for rcpt, kind, n in rows}
    staff = {rcpt for rcpt, _ in got}
    assert staff, got
    for rcpt in staff:  # two notifications in the hour, one notice, then quiet
        assert got.get((rcpt, "notification")) == 2, got
        assert got.get((rcpt, "capped_hour")) == 1, got


def test_the_auto_reply_cap_counts_confirmations_stored_before_the_chunk(
    world: World,
) -> None:
    engine, runtime = world(auto_reply_limit_per_hour=2)
    for n in range(2):
        feed(engine, runtime, make_mail(sender="eager@example.org", subject=f"Topic {n}",
                                        body=f"Question about topic {n}"))
    assert outbox_kinds(engine).get("confirmation") == 2
    feed_one_chunk(engine, runtime,
                   make_mail(sender="eager@example.org", subject="Topic 2",
                             body="Question about topic 2"),
                   make_mail(sender="calm@example.org", subject="Hello", body="One question"))
    assert scalar(engine, "select count(*) from ticket") == 4
    with engine.connect() as conn:
        rcpts = sorted(str(r) for (r,) in conn.execute(
            text("select rcpt from outbox where kind = 'confirmation'")))
    assert rcpts == ["calm@example.org", "eager@example.org", "eager@example.org"]


def test_new_tickets_of_chunks_are_numbered_one_after_another(world: World) -> None:
    """Their ids are taken ahead and the rows wait for the chunk's commit: still every
    ticket gets the next number, and its mails and people carry it."""
    engine, runtime = world()
    for first in (0, 5):
        feed_one_chunk(engine, runtime, *[
            make_mail(sender=f"c{n}@example.org", subject=f"Question {n}") for n in
            range(first, first + 5)
        ])
    with engine.connect() as conn:
        tickets = [(int(i), str(r)) for i, r in conn.execute(
            text("select id, requester from ticket order by id"))]
        mails = dict(conn.execute(text(
            "select from_addr, ticket_id from message where direction = 'in'")).all())
        people = dict(conn.execute(text(
            "select address, ticket_id from participant where role = 'requester'")).all())
    assert tickets == [(n + 1, f"c{n}@example.org") for n in range(10)]
    assert mails == people == {f"c{n}@example.org": n + 1 for n in range(10)}
    tags = [str(r) for (r,) in engine.connect().execute(
        text("select raw from outbox where kind = 'confirmation' order by id"))]
    assert all(f"[MD-{n + 1}]" in tag for n, tag in enumerate(tags)), tags


def test_a_follow_up_in_the_same_chunk_joins_the_ticket_its_original_opened(
    world: World,
) -> None:
    """The ticket the first mail opened still waits in the buffer when the second one,
    which answers it, looks for its thread."""
    engine, runtime = world()
    first = make_mail(sender="ann@example.org", subject="Printer on fire",
                      message_id="<original@example.org>")
    follow_up = make_mail(sender="ann@example.org", subject="Re: Printer on fire",
                          body="Now it smokes too.",
                          headers={"In-Reply-To": "<original@example.org>"})
    feed_one_chunk(engine, runtime, first, follow_up)
    assert scalar(engine, "select count(*) from ticket") == 1
    joined = "select count(*) from message where ticket_id = 1 and direction = 'in'"
    assert scalar(engine, joined) == 2
