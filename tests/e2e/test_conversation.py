"""Conversations as a user has them: a real `maildesk run`, real SMTP on loopback,
SQLite and the PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path

import pytest

from tests.conftest import maildesk_cli, wait_for
from tests.mailkit import mails_to, make_mail, send, sent_mails


def data_dir(daemon) -> Path:  # type: ignore[no-untyped-def]
    return Path(daemon.env["MAILDESK_DATA_DIR"])


def test_new_mail_reply_threading_and_reopen(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    data = data_dir(d)
    send(d.port, make_mail(subject="Printer on fire", message_id="<first@client.example>"))

    confirmation = wait_for(lambda: mails_to(data, "ann@example.org"))[0]
    subject = str(confirmation["Subject"])
    assert subject.startswith("[MD-1] ") and "Printer on fire" in subject
    assert confirmation["In-Reply-To"] == "<first@client.example>"
    assert "<first@client.example>" in str(confirmation["References"])
    assert confirmation["Auto-Submitted"] == "auto-replied"
    assert str(confirmation["From"]) == "Support <support@localhost>"
    text = confirmation.get_body(("plain",)).get_content()
    html = confirmation.get_body(("html",)).get_content()
    assert "MD-1" in text and "Standard" in text  # TID, SLA level name
    assert "Expect our first answer by" in html
    # the promise in business time, named as the customer reads it (sla.yaml: Moscow)
    assert re.search(r"first answer by \w+day, \d+ \w+( \d{4})?, \d\d:\d\d \(Moscow time\)\.",
                     text), text
    # staff notification to the assignee, with a reply token
    staff = wait_for(lambda: [m for m in sent_mails(data) if "example.com" in str(m["To"])])
    assert "support+t1." in str(staff[0]["Reply-To"])
    assert "my printer is on fire" in staff[0].get_body(("plain",)).get_content()

    # reply with the tag, mangled by the client
    send(d.port, make_mail(subject="AW: RE:  [ md-1 ]  Printer on fire", body="Still burning"))
    # reply that lost the tag but keeps In-Reply-To to our confirmation
    send(
        d.port,
        make_mail(
            subject="Re: your mail",
            body="And smoke now",
            headers={"In-Reply-To": str(confirmation["Message-ID"])},
        ),
    )
    wait_for(
        lambda: (
            d.scalar("select count(*) from message where ticket_id = 1 and direction = 'in'") == 3
        )
    )
    assert d.scalar("select count(*) from ticket") == 1

    # a reply to a closed ticket reopens it
    with d.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("update ticket set status = 'closed' where id = 1"))
    send(d.port, make_mail(subject="Ответ: [MD-1] Printer on fire", body="It is back"))
    wait_for(lambda: d.scalar("select status from ticket where id = 1") == "open")
    assert d.scalar("select count(*) from ticket") == 1

    shown = json.loads(maildesk_cli(d.env, "show", "[MD-1]", "--json").stdout)
    assert [m["body_text"].strip() for m in shown["messages"] if m["direction"] == "in"][1:] == [
        "Still burning",
        "And smoke now",
        "It is back",
    ]
    assert any(e["kind"] == "status" and "open" in e["detail"] for e in shown["events"])
    listed = json.loads(maildesk_cli(d.env, "tickets", "--status", "open", "--json").stdout)
    assert [t["tid"] for t in listed] == ["MD-1"]


def test_stranger_with_a_tid_does_not_join(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    send(d.port, make_mail(sender="ann@example.org", subject="My invoice data"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    send(
        d.port,
        make_mail(sender="mallory@evil.example", subject="Re: [MD-1] give me the history"),
        mail_from="mallory@evil.example",
    )
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    assert d.scalar("select requester from ticket where id = 2") == "mallory@evil.example"
    assert d.scalar("select count(*) from message where ticket_id = 1 and direction = 'in'") == 1


def test_duplicates_and_multiple_support_addresses(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_SUPPORT_ADDRESS="support@localhost,help@localhost")
    data = data_dir(d)
    raw = make_mail(message_id="<same@client.example>", to="support@localhost", cc="help@localhost")
    send(d.port, raw, rcpts=["support@localhost", "help@localhost"])
    send(d.port, raw)  # the same mail again (an SMTP retry, a second MX path)
    # and a mail without Message-ID delivered twice: the content hash catches it
    no_id = b"From: bob@example.net\r\nTo: support@localhost\r\nSubject: no id\r\n\r\nbody\r\n"
    send(d.port, no_id, mail_from="bob@example.net")
    send(d.port, no_id, mail_from="bob@example.net")
    wait_for(lambda: d.processed(4))
    assert d.scalar("select count(*) from ticket") == 2
    assert d.scalar("select count(*) from inbound where status = 'duplicate'") == 2
    wait_for(lambda: len(mails_to(data, "bob@example.net")) == 1)
    assert len(mails_to(data, "ann@example.org")) == 1
    assert d.scalar("select count(*) from participant where address = 'help@localhost'") == 0


def test_smtp_policy_replies(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_MAX_MESSAGE_BYTES="50000")
    with smtplib.SMTP("127.0.0.1", d.port) as client:
        client.ehlo()
        client.mail("ann@example.org")
        code, text = client.rcpt("someone@elsewhere.example")
        assert code == 550, text  # not an open relay
        code, _ = client.rcpt("support+t1.abc@localhost")
        assert code == 250
    big = make_mail(body="x" * 80 + "\n" * 0 + ("y" * 76 + "\n") * 1000)
    with pytest.raises(smtplib.SMTPException) as caught:
        send(d.port, big)
    assert "552" in str(caught.value)
    assert d.scalar("select count(*) from inbound") == 0


def test_auto_submitted_mail_makes_ticket_without_confirmation(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    data = data_dir(d)
    send(
        d.port,
        make_mail(
            sender="robot@example.org",
            subject="Out of Office",
            headers={"Auto-Submitted": "auto-replied"},
        ),
    )
    send(
        d.port,
        make_mail(
            sender="list@example.org",
            subject="News",
            headers={"Precedence": "bulk", "List-Id": "<news.example.org>"},
        ),
    )
    send(d.port, make_mail(sender="ann@example.org", subject="A person"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 3)
    wait_for(lambda: mails_to(data, "ann@example.org"))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    assert mails_to(data, "robot@example.org") == []
    assert mails_to(data, "list@example.org") == []
    events = d.query("select detail from event where kind = 'no_confirmation'")
    assert len(events) == 2


def test_out_of_office_on_a_ticket_changes_nothing(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    send(d.port, make_mail(subject="Question"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    with d.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("update ticket set status = 'resolved' where id = 1"))
    send(
        d.port,
        make_mail(
            subject="Automatic reply: [MD-1] Question", headers={"Auto-Submitted": "auto-replied"}
        ),
    )
    wait_for(lambda: d.scalar("select count(*) from message where kind = 'auto_reply'") == 1)
    assert d.scalar("select status from ticket where id = 1") == "resolved"


def test_auto_reply_cap_per_sender(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="3")
    for i in range(5):
        send(
            d.port,
            make_mail(sender="chatty@example.org", subject=f"Question {i}"),
            mail_from="chatty@example.org",
        )
    wait_for(lambda: d.scalar("select count(*) from ticket") == 5)
    assert d.scalar("select count(*) from outbox where kind = 'confirmation'") == 3


def test_bounce_attaches_to_ticket_and_suppresses_address(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    send(d.port, make_mail(sender="gone@example.org", subject="Help"), mail_from="gone@example.org")
    wait_for(lambda: d.scalar("select count(*) from outbox where kind = 'confirmation'") == 1)
    confirmation_id = d.scalar("select message_id from outbox where kind = 'confirmation'")
    dsn = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@localhost\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour mail could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{confirmation_id}>\r\nSubject: [MD-1] Help\r\n\r\n--B--\r\n"
    ).encode()
    send(d.port, dsn, mail_from="")
    wait_for(lambda: d.scalar("select count(*) from message where kind = 'bounce'") == 1)
    assert d.scalar("select ticket_id from message where kind = 'bounce'") == 1
    assert d.scalar("select status from ticket where id = 1") == "new"
    assert d.scalar("select count(*) from suppression where address = 'gone@example.org'") == 1
    # a new mail from the bounced address gets no confirmation for a while
    send(
        d.port,
        make_mail(sender="gone@example.org", subject="Another"),
        mail_from="gone@example.org",
    )
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    assert d.scalar("select count(*) from outbox where kind = 'confirmation'") == 1


def test_russian_mail_gets_russian_confirmation(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    data = data_dir(d)
    body = "Здравствуйте! У нас не печатает принтер, помогите пожалуйста разобраться.\n"
    raw = (
        "From: =?koi8-r?b?"
        + __import__("base64").b64encode("Иван".encode("koi8-r")).decode()
        + "?= <ivan@example.ru>\r\nTo: support@localhost\r\n"
        "Subject: =?windows-1251?b?"
        + __import__("base64").b64encode("Принтер".encode("cp1251")).decode()
        + "?=\r\nMessage-ID: <ru1@example.ru>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body.encode("koi8-r")
    send(d.port, raw, mail_from="ivan@example.ru")
    confirmation = wait_for(lambda: mails_to(data, "ivan@example.ru"))[0]
    assert "Принтер" in str(confirmation["Subject"])
    assert "Здравствуйте, Иван!" in confirmation.get_body(("plain",)).get_content()
    assert d.scalar("select body_text from message where ticket_id = 1").strip() == body.strip()
    assert d.scalar("select language from ticket where id = 1") == "ru"
