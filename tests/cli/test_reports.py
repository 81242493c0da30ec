"""`maildesk report sla|overdue|client` over tickets with known times, on SQLite and
PostgreSQL, as an operator runs them; the monthly client mail queued once."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from maildesk.config.files import load_sla
from maildesk.config.runtime import load_runtime
from maildesk.config.settings import load_settings
from maildesk.storage.db import make_engine
from maildesk.storage.models import Outbox, SlaStep, Ticket
from maildesk.work.client_report import queue_client_reports
from tests.conftest import REPO, base_env, maildesk_cli, upgrade_database

MSK = ZoneInfo("Europe/Moscow")
SLA = load_sla(REPO / "sla.yaml")


def msk(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK).astimezone(UTC)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = base_env(tmp_path / "data", database_url)
    upgrade_database(env)
    return env


@pytest.fixture
def engine(env: dict[str, str]) -> Any:
    engine = make_engine(env["MAILDESK_DATABASE_URL"])
    yield engine
    engine.dispose()


def add(engine: Engine, *tickets: dict[str, Any], steps: dict[int, int] | None = None) -> None:
    """Tickets with the due times their level gives them (unless given), in order: ids 1..n."""
    with Session(engine) as session:
        for kw in tickets:
            level, created = kw.get("sla_level", "standard"), kw["created_at"]
            if level in SLA.levels:
                due = SLA.due_times(level, created)
                kw.setdefault("first_response_due", due.first_response)
                kw.setdefault("resolution_due", due.resolution)
            session.add(Ticket(subject=kw.pop("subject", "help"),
                               requester=kw.pop("requester", "ann@client.example"),
                               updated_at=created, **kw))
            session.flush()
        for ticket_id, count in (steps or {}).items():
            for i in range(count):
                session.add(SlaStep(ticket_id=ticket_id, step=f"first_response:x:{i}",
                                    target="first_response", kind=f"escalation{i}",
                                    due=msk(11, 12, 10), fired_at=msk(11, 12, 10)))
        session.commit()


def run_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(maildesk_cli(env, "report", *args, "--json").stdout)


def test_sla_report_counts_working_hours_per_level_and_staff(
    env: dict[str, str], engine: Engine
) -> None:
    add(
        engine,
        # Friday 18:30, answered Monday 11:00 (1.5 working hours), resolved Tuesday 13:00.
        dict(created_at=msk(11, 6, 18, 30), assignee="alice@example.com",
             first_response_at=msk(11, 9, 11), status="resolved", resolved_at=msk(11, 10, 13),
             rating="good"),
        # Monday 10:00, answered Thursday 12:00: 29 working hours, due Thursday 10:00.
        dict(created_at=msk(11, 9, 10), assignee="alice@example.com",
             first_response_at=msk(11, 12, 12), status="answered", rating="bad"),
        # Partner (4 h), never answered: breached at Monday 14:00.
        dict(created_at=msk(11, 16, 10), sla_level="partner", status="open"),
        dict(created_at=msk(11, 17, 10), status="spam"),  # never counts
        dict(created_at=msk(10, 20, 10), status="open"),  # before the window
        steps={2: 2},
    )
    report = run_json(env, "sla", "--from", "2026-11-01", "--to", "2026-11-30")
    assert report["timezone"] == "Europe/Moscow"
    assert report["from"] == "2026-10-31T21:00:00+00:00" and report["to"].startswith("2026-11-30")
    rows = {(r["by"], r["key"]): r for r in report["rows"]}
    assert list(rows) == [("level", "standard"), ("level", "partner"),
                          ("assignee", "alice@example.com"), ("assignee", "(unassigned)"),
                          ("total", "all")]
    alice = rows["assignee", "alice@example.com"]
    assert alice["tickets"] == 2 and alice["answered"] == 2
    assert alice["first_response_median_hours"] == 15.25  # (1.5 + 29) / 2
    assert alice["first_response_p90_hours"] == pytest.approx(1.5 + 0.9 * 27.5, abs=0.01)
    assert (alice["first_response_breaches"], alice["first_response_breach_share"]) == (1, 0.5)
    assert (alice["resolved"], alice["resolution_median_hours"]) == (1, 12.5)  # 0.5 + 9 + 3
    assert (alice["rated_good"], alice["rated_bad"], alice["reminders_sent"]) == (1, 1, 2)
    partner = rows["level", "partner"]
    assert (partner["tickets"], partner["answered"], partner["first_response_breaches"]) == (
        1, 0, 1)
    assert partner["first_response_median_hours"] is None
    total = rows["total", "all"]
    assert (total["tickets"], total["first_response_breaches"]) == (3, 2)
    assert total["first_response_breach_share"] == pytest.approx(0.6667)

    out = maildesk_cli(env, "report", "sla", "--from", "2026-11-01", "--to", "2026-11-30",
                       "--csv").stdout
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["key"] for r in table] == ["standard", "partner", "alice@example.com",
                                         "(unassigned)", "all"]
    assert table[2]["first_response_median_hours"] == "15.25"
    assert table[3]["first_response_median_hours"] == ""  # none answered: empty, not 0
    text = maildesk_cli(env, "report", "sla", "--from", "2026-11-01", "--to", "2026-11-30")
    assert "assignee alice@example.com" in text.stdout and "15h15m" in text.stdout


def test_an_empty_window_is_an_empty_report(env: dict[str, str]) -> None:
    report = run_json(env, "sla", "--from", "2026-01-01", "--to", "2026-01-31")
    assert [(r["by"], r["tickets"], r["first_response_breach_share"])
            for r in report["rows"]] == [("total", 0, None)]
    out = maildesk_cli(env, "report", "sla", "--csv").stdout  # the last 30 days
    assert out.splitlines()[0].startswith("by,key,tickets,") and len(out.splitlines()) == 2
    assert run_json(env, "overdue") == []
    assert "no open ticket" in maildesk_cli(env, "report", "overdue").stdout
    assert run_json(env, "client", "--month", "2026-01")["clients"] == []
    assert maildesk_cli(env, "report", "client", "--csv").stdout.startswith("client,tid,")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_overdue_lists_past_and_near_due_times_most_urgent_first(
    env: dict[str, str], engine: Engine
) -> None:
    now = datetime.now(UTC)
    special = dict(sla_level="special", status="open", created_at=now - timedelta(hours=5),
                   resolution_due=now + timedelta(hours=5))
    add(
        engine,
        dict(special, subject="late", first_response_due=now - timedelta(hours=2)),
        dict(special, subject="near", first_response_due=now + timedelta(minutes=10)),
        dict(special, subject="far", first_response_due=now + timedelta(hours=3)),
        dict(special, subject="done", first_response_due=now - timedelta(hours=2),
             status="resolved", resolved_at=now),
        dict(special, subject="answered late", first_response_due=now - timedelta(hours=3),
             first_response_at=now - timedelta(hours=1),
             resolution_due=now - timedelta(minutes=30)),
        # A level no longer in sla.yaml: round the clock, 1 h counts as near.
        dict(special, subject="old level", sla_level="gold",
             first_response_due=now + timedelta(minutes=50)),
    )
    rows = run_json(env, "overdue")
    assert [r["subject"] for r in rows] == ["late", "answered late", "near", "old level"]
    minutes = [(d["target"], d["overdue"], d["working_minutes"]) for r in rows
               for d in r["deadlines"]]
    expected = [("first_response", True, -120), ("resolution", True, -30),
                ("first_response", False, 9), ("first_response", False, 49)]
    assert [m[:2] for m in minutes] == [e[:2] for e in expected]
    assert all(abs(m[2] - e[2]) <= 2 for m, e in zip(minutes, expected, strict=True))
    table = maildesk_cli(env, "report", "overdue").stdout
    assert "MD-1" in table and "overdue 2h" in table and "first response" in table


def _client_tickets(engine: Engine) -> None:
    october = dict(created_at=msk(10, 5, 12), status="closed")
    add(
        engine,
        dict(october, requester="a@partner.example", subject="VPN", time_spent_minutes=30,
             rating="good", resolved_at=msk(10, 7, 12), closed_at=msk(10, 14, 12)),
        dict(october, requester="b@eu.partner.example", subject="Mail", time_spent_minutes=45,
             closed_at=msk(10, 31, 23, 30)),  # the last evening of October, Moscow time
        dict(october, requester="c@other.example", subject="Other", rating="bad",
             status="resolved", resolved_at=msk(10, 20, 12)),
        dict(october, requester="d@other.example", subject="November",
             closed_at=msk(11, 1, 0, 30)),
        dict(october, requester="e@other.example", subject="Reopened", status="open",
             resolved_at=msk(10, 20, 12)),
    )


def test_client_report_per_client_with_time_spent_and_ratings(
    env: dict[str, str], engine: Engine
) -> None:
    _client_tickets(engine)
    report = run_json(env, "client", "--month", "2026-10")
    assert [(c["client"], c["title"], c["tickets"], c["time_spent_minutes"], c["rated_good"],
             c["rated_bad"]) for c in report["clients"]] == [
        ("partner", "Partner Ltd", 2, 75, 1, 0),
        ("other.example", "other.example", 1, 0, 0, 1),
    ]
    assert [t["tid"] for t in report["clients"][0]["ticket_list"]] == ["MD-1", "MD-2"]
    rows = list(csv.DictReader(io.StringIO(
        maildesk_cli(env, "report", "client", "--month", "2026-10", "--csv").stdout)))
    assert [(r["client"], r["tid"], r["time_spent_minutes"], r["rating"]) for r in rows] == [
        ("partner", "MD-1", "30", "good"), ("partner", "MD-2", "45", ""),
        ("other.example", "MD-3", "0", "bad"),
    ]
    one = run_json(env, "client", "--month", "2026-10", "--client", "c@other.example")
    assert [c["client"] for c in one["clients"]] == ["other.example"]
    november = run_json(env, "client", "--month", "2026-11", "--client", "other.example")
    assert [t["subject"] for c in november["clients"] for t in c["ticket_list"]] == ["November"]
    text = maildesk_cli(env, "report", "client", "--month", "2026-10", "--client", "partner")
    assert "Partner Ltd" in text.stdout and "1h15m" in text.stdout and "MD-2" in text.stdout


def _outbox(engine: Engine) -> list[Outbox]:
    with Session(engine) as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)).all())


def _parts(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_mail_goes_once_with_an_inline_chart(env: dict[str, str], engine: Engine) -> None:
    _client_tickets(engine)
    args = ("report", "client", "--month", "2026-10", "--mail", "--client", "partner")
    first = maildesk_cli(env, *args)
    assert "queued the 2026-10 report to manager@partner.example" in first.stdout
    assert "queued before" in maildesk_cli(env, *args).stdout
    (row,) = _outbox(engine)
    assert (row.kind, row.recipients, row.ticket_id) == (
        "client_report", ["manager@partner.example"], None)
    message = _parts(row.raw)
    assert message["Subject"] == "Support report for 2026-10: Partner Ltd"
    assert message["Auto-Submitted"] == "auto-generated"
    (image,) = [p for p in message.walk() if p.get_content_type() == "image/png"]
    payload = image.get_content()
    assert isinstance(payload, bytes) and payload.startswith(b"\x89PNG")
    cid = str(image["Content-ID"]).strip("<>")
    html = message.get_body(("html",))
    assert html is not None and f'src="cid:{cid}"' in html.get_content()
    text = message.get_body(("plain",))
    assert text is not None and "MD-2" in text.get_content() and "1h15m" in text.get_content()
    assert "Other" not in text.get_content()  # only this client's tickets

    # To the admins: every client; once too; --resend queues another.
    maildesk_cli(env, "report", "client", "--month", "2026-10", "--mail")
    maildesk_cli(env, "report", "client", "--month", "2026-10", "--mail")
    maildesk_cli(env, "report", "client", "--month", "2026-10", "--mail", "--resend")
    rows = _outbox(engine)
    assert [r.recipients for r in rows] == [["manager@partner.example"], ["bob@example.com"],
                                            ["bob@example.com"]]
    overview = _parts(rows[1].raw).get_body(("plain",))
    assert overview is not None and "Other" in overview.get_content()

    # The monthly job queues nothing more for October; November goes once.
    runtime = load_runtime(load_settings(**_settings(env)))
    now = msk(12, 1, 9)
    with Session(engine) as session:
        assert queue_client_reports(session, runtime, "2026-10", now) == 0
        assert queue_client_reports(session, runtime, "2026-11", now) == 1  # admins only
        assert queue_client_reports(session, runtime, "2026-11", now) == 0
        session.commit()
    assert len(_outbox(engine)) == 4


def _settings(env: dict[str, str]) -> dict[str, Any]:
    return {
        "data_dir": Path(env["MAILDESK_DATA_DIR"]), "database_url": env["MAILDESK_DATABASE_URL"],
        "rules": Path(env["MAILDESK_RULES"]), "sla": Path(env["MAILDESK_SLA"]),
        "templates": Path(env["MAILDESK_TEMPLATES"]), "secret": env["MAILDESK_SECRET"],
    }


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_daemons_running_the_monthly_job_queue_each_mail_once(
    env: dict[str, str], engine: Engine
) -> None:
    _client_tickets(engine)
    runtime = load_runtime(load_settings(**_settings(env)))
    start = threading.Barrier(2)
    counts: list[int] = []

    def job() -> None:
        with Session(engine) as session:
            start.wait()
            counts.append(queue_client_reports(session, runtime, "2026-10", msk(11, 1, 9)))
            session.commit()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 2  # the admins' overview and the partner's report
    assert sorted(r.recipients[0] for r in _outbox(engine)) == [
        "bob@example.com", "manager@partner.example"]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sla", "--from", "2026-13-01"], "--from '2026-13-01': not a date like 2026-11-30"),
        (["sla", "--from", "2026-11-10", "--to", "2026-11-01"],
         "--from 2026-11-10 is after --to 2026-11-01"),
        (["sla", "--json", "--csv"], "--json and --csv: choose one"),
        (["client", "--month", "2026-1"], "--month '2026-1': not a month like 2026-11"),
        (["client", "--client", "not a domain"],
         "--client 'not a domain': not a client name (partner), a domain or an address"),
        (["client", "--mail", "--client", "other.example"],
         "--mail --client: client 'other.example' has no contacts; add it under clients:"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = maildesk_cli(env, "report", *args, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"maildesk: {message}") and result.stderr.count("\n") == 1
