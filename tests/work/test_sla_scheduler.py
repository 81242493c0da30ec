"""The SLA jobs on a controllable clock, over a real database (SQLite and PostgreSQL):
mails come in through the spool and the real pipeline; the jobs are called with the
time the test chooses, as the daemon's scheduler calls them with the time it is."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from maildesk.config.runtime import Runtime, load_runtime
from maildesk.config.settings import load_settings
from maildesk.core.replytoken import reply_address
from maildesk.storage.db import make_engine, upgrade
from maildesk.storage.models import Ticket
from maildesk.work.slascan import (
    auto_close,
    digest_unassigned,
    monthly_client_reports,
    recompute_after_reload,
    return_pending,
    scan_sla,
)
from tests.conftest import REPO
from tests.mailkit import make_mail
from tests.pipelinekit import feed

SLA = """
calendars:
  always: {timezone: Europe/Moscow, always: true}
  office:
    timezone: Europe/Berlin
    hours: {mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"],
            thu: ["09:00-17:00"], fri: ["09:00-17:00"]}
levels:
  standard:
    calendar: always
    first_response: 2h
    next_response: 1h
    warn_before: 30m
    escalation:
      - {after: 0m, notify: assignee, template: sla_breach}
      - {after: 1h, notify: group_lead, template: sla_escalation}
      - {after: 2h, notify: admins, template: sla_escalation}
  office:
    calendar: office
    first_response: 4h
default_level: standard
unassigned: {every: 5m, notify: admins}
pending: {return_after: 3h}
auto_close: {after_days: 7}
"""
RULES = """
staff:
  - {name: Alice, email: alice@example.com, groups: [l1]}
  - {name: Bob, email: bob@example.com, groups: [l1], admin: true}
  - {name: Carol, email: carol@example.com, admin: true}
groups:
  l1: {strategy: round_robin, lead: carol@example.com}
defaults: {assign_group: l1}
"""
KEY = "test-secret"


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[tuple[Engine, Runtime]]:
    (tmp_path / "sla.yaml").write_text(SLA)
    (tmp_path / "rules.yaml").write_text(RULES)
    engine = make_engine(database_url)
    upgrade(engine)
    settings = load_settings(data_dir=tmp_path, rules=tmp_path / "rules.yaml",
                             sla=tmp_path / "sla.yaml", templates=REPO / "templates",
                             secret=KEY)
    yield engine, load_runtime(settings)
    engine.dispose()


def one(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def ticket(engine: Engine, number: int = 1) -> Ticket:
    with Session(engine) as session:
        found = session.get(Ticket, number)
        assert found is not None
        return found


def sla_mails(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(str(k), str(r)) for k, r in conn.execute(text(
            "select kind, rcpt from outbox where kind like 'sla_%' order by id"))]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_warning_breach_and_escalations_fire_once_in_order(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    t0 = ticket(engine).created_at
    assignee = str(ticket(engine).assignee)

    def at(minutes: int) -> datetime:
        return t0 + timedelta(minutes=minutes)

    assert scan_sla(engine, runtime, at(89)) == 0
    assert scan_sla(engine, runtime, at(91)) == 1  # the warning, 30 min before
    assert scan_sla(engine, runtime, at(92)) == 0
    assert sla_mails(engine) == [("sla_warn", assignee)]
    # the daemon restarts: a new runtime and engine repeat nothing
    again = make_engine(str(engine.url.render_as_string(hide_password=False)))
    restarted = load_runtime(runtime.settings)
    assert scan_sla(again, restarted, at(95)) == 0
    assert scan_sla(again, restarted, at(121)) == 1  # the breach, to the assignee
    again.dispose()
    # the clock jumps: both escalation steps at once, in order, each once
    assert scan_sla(engine, runtime, at(300)) == 2
    assert scan_sla(engine, runtime, at(400)) == 0
    assert sla_mails(engine) == [
        ("sla_warn", assignee),
        ("sla_breach", assignee),
        ("sla_escalation1", "carol@example.com"),  # the group's lead
        ("sla_escalation2", "bob@example.com"),  # the admins
        ("sla_escalation2", "carol@example.com"),
    ]
    assert ticket(engine).sla_next_at is None
    steps = one(engine, "select count(*) from sla_step where ticket_id = 1")
    assert steps == 4
    details = [r[0] for r in engine.connect().execute(text(
        "select detail from event where kind = 'sla' order by id"))]
    assert details[0].startswith("first_response warn")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_answer_in_time_prevents_the_breach_and_a_reply_starts_the_next_clock(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    assignee = str(one(engine, "select assignee from ticket where id = 1"))
    token = reply_address("support@localhost", 1, assignee, KEY.encode())
    answer = make_mail(sender=assignee, to=token, subject="Re: [MD-1] Printer",
                       body="Restart it, please.", headers={"In-Reply-To": "<ann-1@example.org>"})
    feed(engine, runtime, answer)
    assert one(engine, "select first_response_at from ticket where id = 1") is not None
    assert one(engine, "select status from ticket where id = 1") == "answered"
    later = datetime.now().astimezone() + timedelta(hours=10)
    assert scan_sla(engine, runtime, later) == 0  # answered: first response met, paused
    assert sla_mails(engine) == []
    # ann writes back: the next answer is due within an hour of working time
    feed(engine, runtime, make_mail(subject="Re: [MD-1] Printer", body="Still burning.",
                                    message_id="<ann-2@example.org>"))
    due = one(engine, "select next_response_due from ticket where id = 1")
    assert due is not None
    assert one(engine, "select status from ticket where id = 1") == "open"
    assert scan_sla(engine, runtime, datetime.now().astimezone() + timedelta(minutes=61)) >= 2
    kinds = [k for k, _ in sla_mails(engine)]
    assert kinds[:2] == ["sla_warn", "sla_breach"]
    assert one(engine, "select count(*) from sla_step where target = 'next_response'") == 2


@pytest.mark.parametrize("backend", ["sqlite"])
def test_pending_pauses_the_clock_and_returns(world: tuple[Engine, Runtime]) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    due_before = ticket(engine).first_response_due
    assignee = str(one(engine, "select assignee from ticket where id = 1"))
    token = reply_address("support@localhost", 1, assignee, KEY.encode())
    feed(engine, runtime, make_mail(sender=assignee, to=token, subject="Re: [MD-1]",
                                    body="#wait", headers={"In-Reply-To": "<ann-1@example.org>"}))
    assert one(engine, "select status from ticket where id = 1") == "pending"
    assert one(engine, "select sla_paused_at from ticket where id = 1") is not None
    two_hours_on = datetime.now().astimezone() + timedelta(hours=2, minutes=1)
    assert scan_sla(engine, runtime, two_hours_on) == 0  # paused: no breach
    # pending.return_after (3 h) passes: open again, the assignee is told, the clock runs on
    assert return_pending(engine, runtime, datetime.now().astimezone() + timedelta(hours=2)) == 0
    back = datetime.now().astimezone() + timedelta(hours=3, minutes=1)
    assert return_pending(engine, runtime, back) == 1
    assert one(engine, "select status from ticket where id = 1") == "open"
    assert one(engine, "select count(*) from outbox where kind = 'pending_return'") == 1
    due_after = ticket(engine).first_response_due
    assert due_before is not None and due_after is not None
    assert due_after - due_before >= timedelta(hours=3)  # moved on by the time it stood


@pytest.mark.parametrize("backend", ["sqlite"])
def test_unassigned_digest_once_per_period_and_auto_close(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer", message_id="<a@example.org>"),
         make_mail(sender="bea@example.org", subject="Scanner", message_id="<b@example.org>"))
    with engine.begin() as conn:
        conn.execute(text("update ticket set assignee = null"))
    now = datetime.now().astimezone()
    assert digest_unassigned(engine, runtime, now) == 2
    assert digest_unassigned(engine, runtime, now + timedelta(minutes=1)) == 0  # same period
    assert digest_unassigned(engine, runtime, now + timedelta(minutes=6)) == 2
    assert one(engine, "select count(*) from outbox where kind = 'digest'") == 2
    with engine.begin() as conn:
        conn.execute(text("update ticket set status = 'resolved', resolved_at = :t where id = 1"),
                     {"t": now - timedelta(days=8)})
    assert auto_close(engine, runtime, now) == 1
    assert one(engine, "select status from ticket where id = 1") == "closed"
    # the first week of next month: last month's report to the admins, once
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=2)
    with engine.begin() as conn:
        conn.execute(text("update ticket set closed_at = :t"), {"t": now})
    assert monthly_client_reports(engine, runtime, next_month) == 1
    assert monthly_client_reports(engine, runtime, next_month + timedelta(hours=1)) == 0
    assert monthly_client_reports(engine, runtime, next_month.replace(day=20)) == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_daemons_on_postgresql_send_each_step_once(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, *(make_mail(sender=f"c{i}@example.org", subject=f"Case {i}")
                            for i in range(20)))
    later = datetime.now().astimezone() + timedelta(hours=5)
    url = engine.url.render_as_string(hide_password=False)
    sent: list[int] = []

    def daemon() -> None:
        mine = make_engine(url)
        try:
            for _ in range(3):
                sent.append(scan_sla(mine, load_runtime(runtime.settings), later))
        finally:
            mine.dispose()

    threads = [threading.Thread(target=daemon) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_ticket = 4  # warning, breach, two escalations
    assert sum(sent) == 20 * per_ticket
    assert one(engine, "select count(*) from sla_step") == 20 * per_ticket
    assert one(engine, "select count(distinct step || ticket_id) from sla_step") == 20 * per_ticket


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_changed_sla_yaml_recomputes_the_running_tickets_once(
    world: tuple[Engine, Runtime], tmp_path: Path
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    assert recompute_after_reload(engine, runtime) == 0  # the first run: nothing changed
    before = ticket(engine).first_response_due
    assert recompute_after_reload(engine, runtime) == 0
    (tmp_path / "sla.yaml").write_text(SLA.replace("first_response: 2h", "first_response: 4h"))
    reloaded = load_runtime(runtime.settings)
    assert recompute_after_reload(engine, reloaded) == 1
    after = ticket(engine).first_response_due
    assert before is not None and after is not None
    assert after - before == timedelta(hours=2)
    assert recompute_after_reload(engine, reloaded) == 0  # once
    assert one(engine, "select count(*) from event where detail like 'due times computed%'") == 1


def test_the_digest_lists_a_held_ticket_even_when_it_has_an_assignee(
    world: tuple[Engine, Runtime],
) -> None:
    engine, runtime = world
    feed(engine, runtime, make_mail(subject="Invoice for November", message_id="<h@example.org>"))
    with engine.begin() as conn:  # held as possible spam, though the rules gave it someone
        conn.execute(text("update ticket set status = 'held', assignee = 'alice@example.com'"))
    assert digest_unassigned(engine, runtime, datetime.now().astimezone()) == 1
    with engine.connect() as conn:
        raw = bytes(conn.execute(text("select raw from outbox where kind = 'digest'")).scalar_one())
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    listed = body.get_content()
    assert "held: possible spam, reply #ham or #spam" in listed
    assert "Invoice for November" in listed
