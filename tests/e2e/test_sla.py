"""SLA reminders from the running daemon's scheduler: real `maildesk run`, real SMTP in,
an aiosmtpd sink as the relay. The due times are moved into the past in the database
(the scheduler's clock is the real one), as a ticket nobody answered would be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.conftest import maildesk_cli, wait_for
from tests.e2e.test_staff_answers import received
from tests.mailkit import make_mail, send


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_scheduler_warns_then_reports_the_breach_once(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_SLA_SCAN_SECONDS="1")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    assignee = wait_for(lambda: d.scalar("select assignee from ticket where id = 1"))
    wait_for(lambda: received(sink, assignee))
    confirmation = received(sink, "ann@example.org")[0]
    body = confirmation.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Moscow time" in body  # the promise in the customer's terms (sla.yaml calendar)
    assert d.scalar("select sla_next_at from ticket where id = 1") is not None

    now = datetime.now(UTC)
    due = now + timedelta(seconds=8)
    with d.engine.begin() as conn:  # the warning time has come; the due time comes soon
        conn.execute(text("update ticket set first_response_warn = :w, first_response_due = :d,"
                          " sla_next_at = :w where id = 1"),
                     {"w": now - timedelta(minutes=1), "d": due})
    warning = wait_for(lambda: [m for m in received(sink, assignee)
                                if str(m["Subject"]).startswith("[SLA warning]")])
    assert "[MD-1]" in str(warning[0]["Subject"])
    wait_for(lambda: [m for m in received(sink, assignee)
                      if str(m["Subject"]).startswith("[SLA breach]")], timeout=40)
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    d.stop()  # a restart, and a scan of the same ticket again, repeat nothing
    d.start()
    with d.engine.begin() as conn:
        conn.execute(text("update ticket set sla_next_at = :d where id = 1"), {"d": due})
    wait_for(lambda: d.scalar("select count(*) from ticket where id = 1 and sla_next_at > :d",
                              d=due) == 1)  # scanned: the next step is the escalation, hours on
    breaches = [m for m in received(sink, assignee)
                if str(m["Subject"]).startswith("[SLA breach]")]
    assert len(breaches) == 1
    assert d.scalar("select count(*) from sla_step where ticket_id = 1") == 2
    listed = maildesk_cli(d.env, "show", "MD-1").stdout
    assert "first_response breach" in listed
