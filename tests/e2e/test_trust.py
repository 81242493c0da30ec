"""Invariants 4 and 5 as an attacker tries them: real `maildesk run`, real SMTP on loopback.

Each mail below is one that, before these rules, smuggled an address, impersonated
staff, silenced a customer or started a mail storm.
"""

from __future__ import annotations

import json
import smtplib
from typing import Any

import pytest

from maildesk.core.replytoken import reply_address
from tests.conftest import maildesk_cli, wait_for
from tests.mailkit import make_mail, send

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
KEY = b"test-secret"  # MAILDESK_SECRET in tests.conftest.base_env
TOKEN_1 = reply_address("support@localhost", 1, "alice@example.com", KEY)


def raw_mail(headers: str, body: str = "Hello, my printer is on fire.") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body + "\r\n").encode()


def relayed(sink: Any) -> list[str]:
    """Every envelope recipient the relay received from maildesk."""
    return [r for _, rcpts, _ in sink.received for r in rcpts]


def shown(d: Any, tid: str) -> dict[str, Any]:
    return json.loads(maildesk_cli(d.env, "show", tid, "--json").stdout)  # type: ignore[no-any-return]


def test_encoded_words_never_become_addresses(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, raw_mail(
        "From: =?utf-8?q?Ann=0D=0ABcc:_evil@evil.test?= <p1@cust.test>\n"
        "To: support@localhost\nCc: =?utf-8?q?x@evil.test?= <friend@cust.test>\n"
        "Subject: Printer\nMessage-ID: <enc-1@cust.test>\n"))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'sent'") >= 1)
    assert d.scalar("select requester from ticket where id = 1") == "p1@cust.test"
    people = {r[0] for r in d.query("select address from participant where ticket_id = 1")}
    assert people == {"p1@cust.test", "friend@cust.test"}
    # ticket 2 from ann; a display name that spells ann's address does not join it
    send(d.port, make_mail(subject="Mine", message_id="<ann-1@example.org>"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    send(d.port, raw_mail(
        "From: =?utf-8?q?ann@example.org?= <mallory@evil.test>\nTo: support@localhost\n"
        "Subject: Re: [MD-2] Mine\nMessage-ID: <mal-1@evil.test>\n"), mail_from="mallory@evil.test")
    wait_for(lambda: d.scalar("select count(*) from ticket") == 3)
    assert d.scalar("select requester from ticket where id = 3") == "mallory@evil.test"
    assert d.scalar("select count(*) from message where ticket_id = 2") == 2  # in + confirmation
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    assert "evil@evil.test" not in relayed(sink) and "x@evil.test" not in relayed(sink)


@SQLITE_ONLY
def test_an_address_a_relay_would_read_differently_gets_no_mail(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    for n, sender in enumerate(('<"victim@evil.test,x"@attacker.test>',
                                '"bob@example.com,"@attacker.test')):
        send(d.port, raw_mail(f"From: {sender}\nTo: support@localhost\n"
                              f"Subject: Hi {n}\nMessage-ID: <q-{n}@attacker.test>\n"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    assert d.scalar("select count(*) from outbox where kind = 'confirmation'") == 0
    assert not any("victim" in r or "attacker" in r for r in relayed(sink))
    to_bob = [raw for _, rcpts, raw in sink.received if rcpts == ["bob@example.com"]]
    assert all(b"Reply-To: Support <support+t" in raw for raw in to_bob)  # notifications only
    events = shown(d, "MD-1")["events"]
    assert any(e["kind"] == "header" and "quoted" in e["detail"] for e in events), events
    assert any(e["kind"] == "no_confirmation" for e in events)


def test_a_bad_header_value_never_costs_the_mail(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    send(d.port, make_mail(subject="Printer", message_id="<nul-1@example.org>"))
    wait_for(lambda: d.scalar("select count(*) from outbox where kind = 'confirmation'") == 1)
    confirmation = d.scalar("select message_id from outbox where kind = 'confirmation'")
    send(d.port, raw_mail(
        "From: ann@example.org\nTo: support@localhost\nSubject: Re: still broken\n"
        "Message-ID: <nul\x00-2@example.org>\n"
        f"References: <bad\x00ref@example.org> <{confirmation}>\n", body="Still \x00 broken"))
    wait_for(lambda: d.scalar("select count(*) from inbound where status != 'new'") == 2)
    assert d.scalar("select count(*) from inbound where status = 'failed'") == 0
    assert d.scalar("select count(*) from ticket") == 1
    assert d.scalar("select count(*) from message where ticket_id = 1 and direction = 'in'") == 2
    events = shown(d, "MD-1")["events"]
    assert any(e["kind"] == "header" and "References" in e["detail"] for e in events)


@SQLITE_ONLY
def test_at_most_100_recipients_per_transaction(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.ehlo()
        client.mail("ann@example.org")
        codes = [client.rcpt(f"support+{i}@localhost")[0] for i in range(101)]
    assert codes[:100] == [250] * 100
    assert codes[100] == 452


@SQLITE_ONLY
def test_staff_are_who_they_prove_to_be(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_TRUSTED_AUTHSERV_ID="mx.test")
    send(d.port, make_mail(subject="Printer", message_id="<cust-1@example.org>"))
    wait_for(lambda: d.scalar("select count(*) from outbox where kind = 'notification'") == 1)
    assignee = d.scalar("select assignee from ticket where id = 1")
    assert assignee == "alice@example.com"  # round robin in l1 starts with alice

    def staff_mail(n: int, to: str, extra: str = "", sender: str = "alice@example.com",
                   subject: str = "Re: [MD-1] Printer") -> None:
        send(d.port, raw_mail(f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
                              f"Message-ID: <staff-{n}@example.com>\n"
                              f"In-Reply-To: <cust-1@example.org>\n{extra}",
                              body=f"Staff reply {n}"), rcpts=[to], mail_from="alice@example.com")

    staff_mail(1, TOKEN_1)  # a valid token: staff, on ticket 1
    staff_mail(2, "support@localhost")  # no token
    staff_mail(3, "support+t1.0000000000@localhost")  # a made-up token
    staff_mail(4, TOKEN_1.replace("+t1.", "+t2."))  # one digit changed
    staff_mail(5, "support@localhost",
               "Authentication-Results: evil.test; dkim=pass header.d=example.com\n")
    staff_mail(6, "support@localhost",
               "Authentication-Results: mx.test; dkim=pass header.d=example.com\n")
    staff_mail(7, TOKEN_1, sender="=?utf-8?q?bob@example.com?= <mallory@evil.test>")
    staff_mail(8, TOKEN_1, subject="Re: your printer")  # no TID: the token names the ticket
    wait_for(lambda: d.processed(9))
    rows = d.query("select body_text, identity, ticket_id, kind from message "
                   "where direction = 'in' and body_text like 'Staff reply%' order by id")
    by_n = {r[0].strip(): (r[1], r[2], r[3]) for r in rows}
    assert by_n["Staff reply 1"] == ("staff", 1, "staff")
    assert by_n["Staff reply 6"] == ("staff", 1, "staff")  # trusted MTA's DKIM pass
    assert by_n["Staff reply 8"] == ("staff", 1, "staff")
    for n in (2, 3, 4, 5, 7):
        identity, ticket_id, kind = by_n[f"Staff reply {n}"]
        assert (identity, kind) == ("customer", "customer"), n
        assert ticket_id != 1, f"spoof {n} joined ticket 1"
    # one warning per claimed address an hour, to the admin (bob), with the evidence
    warnings = d.query("select recipients, raw from outbox where kind = 'alert_spoof'")
    assert len(warnings) == 2, warnings
    assert all(json.loads(r[0]) == ["bob@example.com"] for r in warnings)
    assert b"alice@example.com" in warnings[0][1] and b"bob@example.com" in warnings[1][1]
    # no confirmation goes to a forged staff From
    assert d.scalar("select count(*) from outbox where kind = 'confirmation' "
                    "and rcpt = 'alice@example.com'") == 0
    messages = shown(d, "MD-1")["messages"]
    assert {m["identity"] for m in messages if m["direction"] == "in"} == {"customer", "staff"}
    assert any("reply token" in (m["identity_reason"] or "") for m in messages)


@SQLITE_ONLY
def test_out_of_office_to_our_mail_from_a_stranger_opens_nothing(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    send(d.port, make_mail(subject="Printer", message_id="<c-1@example.org>"))
    wait_for(lambda: d.scalar("select count(*) from outbox where kind = 'confirmation'") == 1)
    confirmation = d.scalar("select message_id from outbox where kind = 'confirmation'")
    for n, subject in enumerate(("Automatic reply: [MD-1] Printer", "Автоответ: Printer")):
        send(d.port, raw_mail(
            f"From: colleague@other.example\nTo: support@localhost\nSubject: {subject}\n"
            f"Message-ID: <oof-{n}@other.example>\nIn-Reply-To: <{confirmation}>\n",
            body="I am out of the office until Monday."), mail_from="colleague@other.example")
    wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == 3)
    assert d.scalar("select count(*) from ticket") == 1
    assert d.scalar("select count(*) from outbox") == 2  # the confirmation and one notification
    events = shown(d, "MD-1")["events"]
    assert sum(e["kind"] == "auto_reply" for e in events) == 2


@SQLITE_ONLY
def test_only_a_report_about_our_own_mail_suppresses(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")

    def dsn(n: int, to: str, recipient: str, original: str) -> bytes:
        return raw_mail(
            f"From: MAILER-DAEMON@mx.example.org\nTo: {to}\nSubject: Undelivered\n"
            f"Message-ID: <dsn-{n}@mx.example.org>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n',
            body="--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{original}>\r\n\r\n"
            "--B--")

    # a forged report about a mail we never sent silences nobody
    send(d.port, dsn(1, "support@localhost", "ann@example.org", "never@sent.example"), mail_from="")
    send(d.port, make_mail(sender="gone@example.org", subject="Help"), mail_from="gone@example.org")
    wait_for(lambda: any(r == "gone@example.org" for r in relayed(sink)))
    assert d.scalar("select count(*) from suppression") == 0
    verp = next(f for f, rcpts, _ in sink.received if rcpts == ["gone@example.org"])
    assert verp.startswith("support+b") and verp.endswith("@localhost")
    original = d.scalar("select message_id from outbox where kind = 'confirmation'")
    # a report to our VERP address naming someone else: ignored
    send(d.port, dsn(2, verp, "victim@example.org", original), rcpts=[verp], mail_from="")
    # the real one: suppresses gone@ and attaches to its ticket
    send(d.port, dsn(3, verp, "gone@example.org", original), rcpts=[verp], mail_from="")
    wait_for(lambda: d.processed(4))
    assert [r[0] for r in d.query("select address from suppression")] == ["gone@example.org"]
    assert d.scalar("select count(*) from message where kind = 'bounce' and ticket_id = 1") == 2
