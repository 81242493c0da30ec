"""Outbound mail through a real SMTP relay (an aiosmtpd sink on loopback)."""

from __future__ import annotations

import email
import json
import time
from collections import Counter

from tests.conftest import free_port, maildesk_cli, wait_for
from tests.mailkit import make_mail, send


def test_relay_down_then_up_delivers_every_mail_once(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{port}")
    for i in range(5):
        send(
            d.port,
            make_mail(sender=f"c{i}@example.org", subject=f"Question {i}"),
            mail_from=f"c{i}@example.org",
        )
    # relay is down: mails are queued and retried, nothing is lost
    wait_for(lambda: d.scalar("select count(*) from outbox where attempts >= 2") == 10)
    assert d.scalar("select count(*) from outbox where status = 'queued'") == 10
    sink = relay(port)
    sink.start()
    wait_for(
        lambda: d.scalar("select count(*) from outbox where status = 'sent'") == 10, timeout=30
    )
    time.sleep(1.5)  # any duplicate sends would arrive in this window
    ids = Counter(email.message_from_bytes(raw)["Message-ID"] for _, _, raw in sink.received)
    assert len(ids) == 10 and set(ids.values()) == {1}
    confirmations = [rcpts for _, rcpts, raw in sink.received if b"Auto-Submitted" in raw]
    assert sorted(r[0] for r in confirmations if r[0].startswith("c")) == [
        f"c{i}@example.org" for i in range(5)
    ]


def test_permanent_relay_refusal_is_visible(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay(refuse_with="550 5.7.1 relaying denied")
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, make_mail(subject="Hi"))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'failed'") == 2)
    rows = json.loads(maildesk_cli(d.env, "outbox", "--status", "failed", "--json").stdout)
    assert len(rows) == 2
    assert all("550 5.7.1 relaying denied" in r["last_error"] for r in rows)
    shown = json.loads(maildesk_cli(d.env, "show", "MD-1", "--json").stdout)
    assert {o["status"] for o in shown["outbox"]} == {"failed"}
