"""Changed tickets wait in the session until the commit (maildesk.storage.pending): a
later mail of the same batch must still see what an earlier one changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from maildesk.config.runtime import Runtime, load_runtime
from maildesk.config.settings import load_settings
from maildesk.storage.db import make_engine, upgrade
from tests.conftest import REPO
from tests.mailkit import make_mail
from tests.pipelinekit import feed


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Runtime]]:
    engine = make_engine(database_url)
    upgrade(engine)
    settings = load_settings(
        data_dir=tmp_path, rules=REPO / "rules.yaml", sla=REPO / "sla.yaml",
        templates=REPO / "templates",
    )
    yield engine, load_runtime(settings)
    engine.dispose()


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_two_replies_in_one_batch_reopen_a_resolved_ticket_once(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer on fire", message_id="<first@example.org>"))
    with engine.begin() as conn:
        conn.execute(text("update ticket set status = 'resolved'"))
    replies = [
        make_mail(subject="Re: [MD-1] Printer on fire", body=f"Still burning ({n}).",
                  message_id=f"<reply{n}@example.org>")
        for n in range(3)
    ]
    feed(engine, runtime, *replies)  # one drain: one batch, one transaction

    assert rows(engine, "select status from ticket") == [("open",)]
    # The first reply reopened it; the next two saw it open, as the first left it.
    changes = rows(engine, "select detail from event where kind = 'status' order by id")
    assert changes == [("resolved -> open (customer replied)",)]
    assert rows(engine, "select count(*) from message where direction = 'in'") == [(4,)]
    assert rows(engine, "select count(*) from outbox where kind = 'notification'") == [(4,)]
