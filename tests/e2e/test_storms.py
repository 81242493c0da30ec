"""No mail storms (invariant 4): a daemon facing autoresponders, and two daemons facing
each other, over real SMTP on loopback for a bounded time; the mail count must stay
within the caps. MAILDESK_LOOP_SECONDS sets the window (8 s here; 60 s for the figures
in the README's Security section)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import os
import queue
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, base_env, free_port, maildesk_cli, wait_for
from tests.mailkit import make_mail, send

SECONDS = float(os.environ.get("MAILDESK_LOOP_SECONDS", "8"))
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


class Autoresponder:
    """A relay whose every recipient answers every mail at once, the way a badly written
    vacation program does: to the From address, 'I am on vacation', no In-Reply-To, no
    Auto-Submitted, whatever the mail said."""

    def __init__(self, daemon_port: int = 0) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.received = 0
        self.daemon_port = daemon_port
        self._replies: queue.Queue[tuple[str, str] | None] = queue.Queue()
        responder = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                responder.received += 1
                parsed = email.message_from_bytes(envelope.original_content)
                reply_to = email.utils.parseaddr(str(parsed["From"]))[1]
                for rcpt in envelope.rcpt_tos:
                    responder._replies.put((rcpt, reply_to))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def start(self) -> None:
        self._controller.start()
        self._thread.start()

    def stop(self) -> None:
        self._replies.put(None)
        self._controller.stop()
        self._thread.join(timeout=10)

    def _answer(self) -> None:
        while (item := self._replies.get()) is not None:
            me, to = item
            with contextlib.suppress(OSError, smtplib.SMTPException):
                send(self.daemon_port, make_mail(sender=me, to=to, subject="I am on vacation",
                                                  body="I am on vacation until Monday."),
                     rcpts=[to], mail_from=me)


def count_outbox(d: Daemon) -> dict[str, int]:
    return {str(k): int(n) for k, n in d.query("select kind, count(*) from outbox group by kind")}


@SQLITE_ONLY
def test_a_daemon_facing_autoresponders_stays_within_its_caps(start_daemon) -> None:  # type: ignore[no-untyped-def]
    responder = Autoresponder()
    responder.start()
    try:
        d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{responder.port}")
        responder.daemon_port = d.port
        send(d.port, make_mail(subject="Printer on fire"))
        time.sleep(SECONDS)
        mails, tickets = responder.received, d.scalar("select count(*) from ticket")
    finally:
        responder.stop()
    kinds = count_outbox(d)
    print(f"\nautoresponder loop, {SECONDS:.0f} s: {mails} mails delivered, {tickets} tickets, "
          f"by kind {kinds}")
    # customer ann, staff alice and bob each answer everything: each opens at most one
    # ticket by autoresponse, then the same mail again joins it silently; admins hear once.
    assert tickets <= 4, kinds
    assert mails <= 12, kinds
    assert kinds.get("alert_spoof", 0) <= 2


@SQLITE_ONLY
def test_two_daemons_facing_each_other_stop(tmp_path: Path, database_url: str) -> None:
    ports = [free_port(), free_port()]
    daemons: list[Daemon] = []
    try:
        for n, name in enumerate(("a", "b")):
            data = tmp_path / name
            env = base_env(
                data,
                f"sqlite:///{data / 'maildesk.db'}",
                MAILDESK_SMTP_LISTEN=f"127.0.0.1:{ports[n]}",
                MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
                MAILDESK_SUPPORT_ADDRESS=f"support@{name}.test",
                MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{ports[1 - n]}",
            )
            data.mkdir()
            maildesk_cli(env, "db", "upgrade")
            daemons.append(Daemon(env, ports[n], tmp_path / f"{name}.log"))
        for daemon in daemons:
            daemon.start()
        a, b = daemons
        # A customer of A whose address is B's support address: the worst seed there is.
        send(a.port, make_mail(sender="support@b.test", to="support@a.test", subject="Hello"),
             rcpts=["support@a.test"], mail_from="support@b.test")
        wait_for(lambda: b.scalar("select count(*) from inbound") >= 1, timeout=30)
        time.sleep(SECONDS)
        totals = [d.scalar("select count(*) from inbound") for d in daemons]
        tickets = [d.scalar("select count(*) from ticket") for d in daemons]
    finally:
        for daemon in daemons:
            daemon.stop()
            daemon.engine.dispose()
    print(f"\ntwo daemons, {SECONDS:.0f} s: mails received {totals}, tickets {tickets}")
    assert totals[0] <= 2 and totals[1] <= 2, totals


@SQLITE_ONLY
def test_staff_notifications_are_capped_per_ticket_with_one_notice(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_NOTIFY_LIMIT_PER_TICKET="3")
    send(d.port, make_mail(subject="Printer"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    for n in range(5):
        send(d.port, make_mail(subject="Re: [MD-1] Printer", body=f"Update number {n}"))
    wait_for(lambda: d.scalar("select count(*) from message where direction = 'in'") == 6)
    kinds = count_outbox(d)
    assert kinds.get("notification") == 3, kinds
    assert kinds.get("capped_ticket") == 1, kinds
    held = d.query("select detail from event where kind = 'notify_capped'")
    assert len(held) == 3 and all("alice@example.com" in r[0] for r in held)


@SQLITE_ONLY
def test_a_sender_opening_too_many_tickets_is_appended_and_admins_told_once(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_NEW_TICKETS_PER_SENDER_PER_HOUR="3")
    for n in range(6):
        send(d.port, make_mail(sender="loop@example.org", subject=f"Question {n}",
                               body=f"Different question number {n}"),
             mail_from="loop@example.org")
    wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == 6)
    assert d.scalar("select count(*) from ticket") == 3
    assert d.scalar("select count(*) from message where ticket_id = 3 and direction = 'in'") == 4
    kinds = count_outbox(d)
    assert kinds.get("alert_storm") == 1 and kinds.get("confirmation") == 3, kinds


@SQLITE_ONLY
def test_notifications_are_capped_per_hour_across_tickets_with_one_notice(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_NOTIFY_LIMIT_PER_HOUR="2")
    for n in range(8):
        send(d.port, make_mail(sender=f"customer{n}@example.org", subject=f"Question {n}"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 8)
    rows = d.query(
        "select rcpt, kind, count(*) from outbox"
        " where kind in ('notification', 'capped_hour') group by rcpt, kind"
    )
    got = {(rcpt, kind): int(count) for rcpt, kind, count in rows}
    staff = {rcpt for rcpt, _ in got}
    assert staff, got
    for rcpt in staff:  # each staff member: two notifications, then one notice, then quiet
        assert got.get((rcpt, "notification")) == 2, got
        assert got.get((rcpt, "capped_hour")) == 1, got
