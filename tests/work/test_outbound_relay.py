"""Outbound mail through a real SMTP relay (an aiosmtpd sink on loopback)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socketserver
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from maildesk.storage.models import Outbox
from maildesk.work.outbox import OutboxSender
from maildesk.work.transports import SmtpTransport
from tests.conftest import free_port, maildesk_cli, wait_for
from tests.mailkit import make_mail, queue_outbox, send


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


def _customer_mail(sender: str, n: int) -> bytes:
    """A mail as an SMTPUTF8 client writes it: the From header in raw UTF-8 (RFC 6532)."""
    return (
        f"From: {sender}\r\nTo: support@localhost\r\nSubject: Заказ {n}\r\n"
        f"Message-ID: <idn-{n}@client.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nЗдравствуйте, где мой заказ?\r\n"
    ).encode()


def _to_customer(sink, address: str) -> tuple[list[str], email.message.Message]:  # type: ignore[no-untyped-def]
    (found,) = [
        (options, email.message_from_bytes(raw, policy=email.policy.SMTPUTF8))
        for (_, rcpts, raw), options in zip(sink.received, sink.mail_options, strict=True)
        if rcpts == [address]
    ]
    return found


def test_customers_at_idn_domains_get_their_confirmation(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    """Customers at пример.рф: each gets a ticket and a confirmation, the domain in ASCII
    (IDNA) in the envelope and in To; a Cyrillic local part goes with SMTPUTF8."""
    sink = relay(smtputf8=True)
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, _customer_mail("Ivan <ivan@пример.рф>", 1), mail_from="ivan@xn--e1afmkfd.xn--p1ai")
    send(d.port, _customer_mail("Иван <иван@пример.рф>", 2), mail_from="bounce@example.org")
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'sent'") == 4)
    assert sorted(r[0] for r in d.query("select requester from ticket")) == [
        "ivan@пример.рф",
        "иван@пример.рф",
    ]
    options, mail = _to_customer(sink, "ivan@xn--e1afmkfd.xn--p1ai")
    assert "SMTPUTF8" not in options
    assert mail["To"] == "ivan@xn--e1afmkfd.xn--p1ai"
    options, mail = _to_customer(sink, "иван@xn--e1afmkfd.xn--p1ai")
    assert "SMTPUTF8" in options
    assert mail["To"] == "иван@xn--e1afmkfd.xn--p1ai"
    assert "Заказ 2" in str(mail["Subject"])


def test_a_relay_without_smtputf8_refuses_only_the_mail_that_needs_it(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()  # no SMTPUTF8
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, _customer_mail("Иван <иван@пример.рф>", 1), mail_from="bounce@example.org")
    send(d.port, make_mail(subject="Printer"))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'failed'") == 1)
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'sent'") == 3)
    rows = json.loads(maildesk_cli(d.env, "outbox", "--status", "failed", "--json").stdout)
    error = rows[0]["last_error"]
    assert "SMTPUTF8" in error and "иван@xn--e1afmkfd.xn--p1ai" in error
    assert d.scalar("select attempts from outbox where status = 'failed'") == 1  # not retried


def _flush_until_done(engine: Engine, sink) -> None:  # type: ignore[no-untyped-def]
    sender = OutboxSender(engine, SmtpTransport("127.0.0.1", sink.port), backoff=0.0)
    for _ in range(10):
        asyncio.run(sender.flush())
        with Session(engine) as session:
            if not session.exec(select(Outbox).where(Outbox.status == "queued")).all():
                return
    raise AssertionError("mails still queued after 10 rounds")


def test_a_batch_goes_over_one_connection_and_a_refusal_does_not_cost_it(engine, relay) -> None:  # type: ignore[no-untyped-def]
    """One TLS handshake and login for ten mails, not ten; a recipient the relay refuses
    fails its own mail, and the connection goes on with the next."""
    sink = relay(refuse_rcpt="nobody@example.org")
    sink.start()
    rcpts = [f"c{n}@example.org" for n in range(10)]
    rcpts[4] = "nobody@example.org"
    queue_outbox(engine, rcpts, "batch")
    _flush_until_done(engine, sink)
    assert sink.connections == 1
    assert [r for _, (r,), _ in sink.received] == rcpts[:4] + rcpts[5:]
    with Session(engine) as session:
        (failed,) = session.exec(select(Outbox).where(Outbox.status == "failed")).all()
    assert failed.recipients == ["nobody@example.org"] and "550 5.1.1" in str(failed.last_error)


def test_a_relay_that_closes_the_connection_gets_every_mail_once(engine, relay) -> None:  # type: ignore[no-untyped-def]
    """A relay taking 3 mails per connection (421, then it closes): the session opens
    another, the mail refused with 421 goes in the next round, none twice."""
    sink = relay(mails_per_connection=3)
    sink.start()
    queue_outbox(engine, [f"c{n}@example.org" for n in range(10)], "batch")
    _flush_until_done(engine, sink)
    ids = Counter(email.message_from_bytes(raw)["Message-ID"] for _, _, raw in sink.received)
    assert ids == Counter({f"<batch{n}@maildesk>": 1 for n in range(10)})
    assert sink.connections >= 4


class ScriptedRelay:
    """A relay on a real socket that answers from a script: it greets with `greeting`,
    answers EHLO offering AUTH, AUTH with `auth`, anything else with 250."""

    def __init__(self, greeting: bytes, auth: bytes) -> None:
        self.connections = 0
        relay = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                relay.connections += 1
                self.wfile.write(greeting)
                if not greeting.startswith(b"220"):
                    return
                for line in self.rfile:
                    verb = line.split(b" ", 1)[0].strip().upper()
                    if verb == b"EHLO":
                        self.wfile.write(b"250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n")
                    elif verb == b"AUTH":
                        self.wfile.write(auth)
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 OK\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("greeting", "auth", "reason"),
    [
        (b"554 5.3.2 No service for you\r\n", b"", "554 5.3.2 No service for you"),
        (b"220 relay.test ESMTP\r\n", b"535 5.7.8 Bad login\r\n", "535 5.7.8 Bad login"),
    ],
    ids=["greeting refused", "login refused"],
)
def test_a_relay_that_refuses_us_fails_no_mail(  # type: ignore[no-untyped-def]
    engine, caplog, greeting: bytes, auth: bytes, reason: str
) -> None:
    """A relay that refuses the connection or the login is the relay's fault or the
    settings', not the mails': they stay queued with the reason, one connection is tried
    for the batch, and the operator reads one error line naming MAILDESK_OUTBOUND."""
    relay = ScriptedRelay(greeting, auth)
    try:
        queue_outbox(engine, [f"c{n}@example.org" for n in range(3)])
        transport = SmtpTransport("127.0.0.1", relay.port, username="md", password="wrong")
        with caplog.at_level(logging.ERROR, logger="maildesk"):
            stats = asyncio.run(OutboxSender(engine, transport).flush())
    finally:
        relay.stop()
    assert (stats.sent, stats.failed, stats.retried) == (0, 0, 3)
    assert relay.connections == 1
    with Session(engine) as session:
        rows = session.exec(select(Outbox)).all()
    assert {(r.status, r.attempts) for r in rows} == {("queued", 1)}
    assert all(reason in str(r.last_error) for r in rows)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and reason in errors[0] and "MAILDESK_OUTBOUND" in errors[0]
