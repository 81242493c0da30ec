"""Staff answer customers from their mail client: real `maildesk run`, real SMTP in,
an aiosmtpd sink as the relay."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from maildesk.core.replytoken import reply_address
from tests.conftest import wait_for
from tests.mailkit import make_mail, send

KEY = b"test-secret"
ATTACHMENT = bytes(range(256)) * 40  # binary, byte for byte


def received(sink: Any, rcpt: str) -> list[EmailMessage]:
    return [
        email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
        for _, rcpts, raw in sink.received
        if rcpt in rcpts
    ]


def staff_mail(
    sender: str, to: str, body: str, in_reply_to: str | None, subject: str = "Re: [MD-1] Printer",
    extra: dict[str, str] | None = None, attach: bool = False,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(body))}@example.com>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    for key, value in (extra or {}).items():
        msg[key] = value
    msg.set_content(body)
    if attach:
        msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf",
                           filename="manual.pdf")
    return msg.as_bytes()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_answer_reaches_customer_and_cc_once_without_quotes(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_TRUSTED_AUTHSERV_ID="mx.test")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>",
                           cc="carl@example.org"))
    wait_for(lambda: received(sink, "alice@example.com"))
    notification = received(sink, "alice@example.com")[0]
    token = reply_address("support@localhost", 1, "alice@example.com", KEY)
    assert token in str(notification["Reply-To"])

    # alice answers from her mail client: Reply (to the token), quote below, an attachment
    body = ("Please restart it and read the manual.\n\nAlice\n\n"
            "On Mon, 23 Nov 2026 at 10:00, Support <support@localhost> wrote:\n"
            "> my printer is on fire. Please help.\n")
    send(d.port, staff_mail("Alice <alice@example.com>", token, body,
                            str(notification["Message-ID"]), attach=True),
         rcpts=[token], mail_from="alice@example.com")
    wait_for(lambda: received(sink, "ann@example.org")
             and len(received(sink, "ann@example.org")) == 2)  # confirmation + answer
    answer = received(sink, "ann@example.org")[-1]
    rcpts = next(r for _, r, raw in sink.received if b"read the manual" in raw
                 or b"cmVhZCB0aGUgbWFudWFs" in raw)
    assert sorted(rcpts) == ["ann@example.org", "carl@example.org"]  # one mail, visible Cc
    (sender,) = answer["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Alice (Support)", "support@localhost")
    assert str(answer["Cc"]) == "carl@example.org"
    assert str(answer["Subject"]).startswith("[MD-1] ")
    assert answer["In-Reply-To"] == "<ann-1@example.org>"
    assert answer["Auto-Submitted"] is None  # a person wrote it
    text = answer.get_body(("plain",)).get_content()
    assert "read the manual" in text and "on fire" not in text and "wrote:" not in text
    (part,) = [p for p in answer.iter_attachments()]
    assert part.get_filename() == "manual.pdf" and part.get_content() == ATTACHMENT
    assert d.scalar("select status from ticket where id = 1") == "answered"
    assert d.scalar("select first_response_at from ticket where id = 1") is not None

    # bob (admin) answers with a trusted MTA's DKIM pass: alice, the assignee, is told
    passed = {"Authentication-Results": "mx.test; dkim=pass header.d=example.com"}
    # (he replies to alice's answer: replying to ann's older mail would be held by the
    # collision guard, see below)
    send(d.port, staff_mail("bob@example.com", "support@localhost", "Bob here: a new toner.",
                            str(answer["Message-ID"]), extra=passed), mail_from="bob@example.com")
    wait_for(lambda: any("Bob here" in m.get_body(("plain",)).get_content()
                         for m in received(sink, "alice@example.com")[1:]))
    # a hidden note from alice: bob (staff on the ticket) gets it, the customer never does
    send(d.port, staff_mail("alice@example.com", token, "#internal\nShe called: it is the toner.",
                            str(notification["Message-ID"])), rcpts=[token],
         mail_from="alice@example.com")
    wait_for(lambda: any("it is the toner" in m.get_body(("plain",)).get_content()
                         for m in received(sink, "bob@example.com")))
    # alice's vacation responder answers a notification: recorded, relayed to nobody
    send(d.port, staff_mail("alice@example.com", token, "I am on vacation.", None,
                            subject="I am on vacation"), rcpts=[token],
         mail_from="alice@example.com")
    # a spoofed alice (no token) never reaches the customer
    send(d.port, staff_mail("alice@example.com", "support@localhost", "Send me your password.",
                            "<ann-1@example.org>"), mail_from="alice@example.com")
    wait_for(lambda: d.processed(6))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    to_ann = [m.get_body(("plain",)).get_content() for m in received(sink, "ann@example.org")]
    assert len(to_ann) == 3  # confirmation, alice's answer, bob's answer
    assert not any("toner." in t and "called" in t for t in to_ann)
    assert not any("vacation" in t or "password" in t for t in to_ann)
    kinds = [r[0] for r in d.query("select kind from event where ticket_id = 1 order by id")]
    assert "note" in kinds and "staff_auto" in kinds


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_reply_to_a_long_closed_ticket_opens_a_linked_one(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(MAILDESK_REOPEN_DAYS="14")
    send(d.port, make_mail(subject="Printer"))
    send(d.port, make_mail(subject="Scanner", body="My scanner is broken."))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    with d.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("update ticket set status = 'closed'"))
        conn.execute(text("update ticket set updated_at = :t where id = 1"),
                     {"t": "2026-01-01 00:00:00+00:00"})
    send(d.port, make_mail(subject="Re: [MD-1] Printer", body="It is broken again."))
    send(d.port, make_mail(subject="Re: [MD-2] Scanner", body="The scanner again."))
    wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == 4)
    assert d.scalar("select count(*) from ticket") == 3
    assert d.scalar("select linked_to from ticket where id = 3") == 1
    assert d.scalar("select status from ticket where id = 2") == "open"  # within the window
    from pathlib import Path

    from tests.mailkit import sent_mails

    def confirmation_3() -> list[EmailMessage]:
        return [m for m in sent_mails(Path(d.env["MAILDESK_DATA_DIR"]))
                if str(m["Subject"]).startswith("[MD-3]") and "ann@" in str(m["To"])]

    wait_for(confirmation_3)
    text = confirmation_3()[0].get_body(("plain",)).get_content()
    assert "continues your earlier request MD-1" in text


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_notifications_thread_carry_attachments_and_clean_text(  # type: ignore[no-untyped-def]
    start_daemon, relay, tmp_path
) -> None:
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_NOTIFY_ATTACH_BYTES="5000")
    small = EmailMessage()
    small["From"], small["To"], small["Subject"] = "ann@example.org", "support@localhost", "Printer"
    small["Message-ID"] = "<ann-a@example.org>"
    small.set_content("Line one.\r\nLine two.\r\n")
    small.add_attachment(b"%PDF small", maintype="application", subtype="pdf",
                         filename="small.pdf")
    send(d.port, small.as_bytes())
    wait_for(lambda: received(sink, "alice@example.com"))
    first = received(sink, "alice@example.com")[0]
    assert [p.get_content() for p in first.iter_attachments()] == [b"%PDF small"]
    assert "\r" not in first.get_body(("plain",)).get_content().replace("\r\n", "\n")

    big = EmailMessage()
    big["From"], big["To"], big["Subject"] = "ann@example.org", "support@localhost", "Re: [MD-1]"
    big["Message-ID"] = "<ann-b@example.org>"
    big.set_content("Here is the big log.\n\n> Line one.\n")
    big.add_attachment(ATTACHMENT, maintype="application", subtype="octet-stream",
                       filename="big.log")
    send(d.port, big.as_bytes())
    wait_for(lambda: len(received(sink, "alice@example.com")) == 2)
    second = received(sink, "alice@example.com")[1]
    assert second["In-Reply-To"] == first["Message-ID"]  # one thread per ticket
    assert list(second.iter_attachments()) == []  # over the limit: listed, not attached
    text = second.get_body(("plain",)).get_content()
    assert "maildesk attachment get MD-1 big.log" in text
    assert "Here is the big log." in text and "> Line one." not in text  # new text only
    out = tmp_path / "big.log"
    from tests.conftest import maildesk_cli

    maildesk_cli(d.env, "attachment", "get", "MD-1", "big.log", "-o", str(out))
    assert out.read_bytes() == ATTACHMENT
    missing = maildesk_cli(d.env, "attachment", "get", "MD-1", "nope.txt", check=False)
    assert missing.returncode == 1 and "big.log" in missing.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_collision_guard_holds_an_answer_until_send(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_TRUSTED_AUTHSERV_ID="mx.test")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    wait_for(lambda: received(sink, "alice@example.com"))
    notification = str(received(sink, "alice@example.com")[0]["Message-ID"])
    token = reply_address("support@localhost", 1, "alice@example.com", KEY)
    passed = {"Authentication-Results": "mx.test; dkim=pass header.d=example.com"}
    # bob answers first
    send(d.port, staff_mail("bob@example.com", "support@localhost", "Bob: buy a new toner.",
                            "<ann-1@example.org>", extra=passed), mail_from="bob@example.com")
    wait_for(lambda: len(received(sink, "ann@example.org")) == 2)

    def alice(body: str, in_reply_to: str) -> None:
        send(d.port, staff_mail("alice@example.com", token, body, in_reply_to), rcpts=[token],
             mail_from="alice@example.com")

    def held_notices() -> list[EmailMessage]:
        return [m for m in received(sink, "alice@example.com")
                if str(m["Subject"]).startswith("[held]")]

    # alice answers the notification she got before bob's answer: held, she is told
    alice("Alice: clean the drum.", notification)
    wait_for(lambda: len(held_notices()) == 1)
    notice = held_notices()[0]
    text = notice.get_body(("plain",)).get_content()
    assert "Bob: buy a new toner." in text and "Alice: clean the drum." in text
    assert "#send" in text and token in str(notice["Reply-To"])
    alice("never mind", str(notice["Message-ID"]))  # anything but #send drops it
    alice("Alice: also check the cable.", notification)
    wait_for(lambda: len(held_notices()) == 2)
    alice("#send\n\n> Your answer on MD-1 was NOT sent", str(held_notices()[1]["Message-ID"]))
    wait_for(lambda: len(received(sink, "ann@example.org")) == 3)
    wait_for(lambda: d.scalar("select count(*) from inbound where status = 'new'") == 0)
    texts = [m.get_body(("plain",)).get_content() for m in received(sink, "ann@example.org")]
    assert "check the cable" in texts[2] and "#send" not in texts[2]
    assert not any("clean the drum" in t for t in texts)
    details = [r[0] for r in d.query("select detail from event where kind = 'held'")]
    assert any("dropped" in x for x in details) and any("released" in x for x in details)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_commands_by_mail_and_their_refusals(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    wait_for(lambda: received(sink, "alice@example.com"))
    notification = str(received(sink, "alice@example.com")[0]["Message-ID"])
    token = reply_address("support@localhost", 1, "alice@example.com", KEY)

    def alice(body: str, to: str = token) -> None:
        send(d.port, staff_mail("alice@example.com", to, body, notification), rcpts=[to],
             mail_from="alice@example.com")

    def settled(n: int) -> None:
        wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == n)

    alice("#assign Bob\n#priority high\n#time 20m\n\nHello Ann, Bob will help you.")
    settled(2)
    row = d.query("select assignee, priority, status, time_spent_minutes from ticket")[0]
    assert tuple(row) == ("bob@example.com", "high", "answered", 20)
    wait_for(lambda: len(received(sink, "ann@example.org")) == 3)  # + "Bob is handling it"
    answer = next(t for t in (m.get_body(("plain",)).get_content()
                              for m in received(sink, "ann@example.org")) if "Bob will" in t)
    assert "Bob will help you" in answer and "#assign" not in answer and "#priority" not in answer

    alice("#asign bob\n#close\nBye")  # one bad line: nothing of the mail takes effect
    settled(3)
    wait_for(lambda: any(str(m["Subject"]).startswith("[not applied]")
                         for m in received(sink, "alice@example.com")))
    refusal = next(m for m in received(sink, "alice@example.com")
                   if str(m["Subject"]).startswith("[not applied]"))
    assert "did you mean #assign" in refusal.get_body(("plain",)).get_content()
    assert d.scalar("select status from ticket where id = 1") == "answered"

    alice("#close")  # commands only: the customer is told it is closed, nothing else
    send(d.port, make_mail(sender="ann@example.org", subject="Re: [MD-1] Printer",
                           body="#close\nI am the customer, this is text."))
    send(d.port, staff_mail("alice@example.com", "support@localhost", "#reopen\nHi",
                            "<ann-1@example.org>"), mail_from="alice@example.com")  # spoof
    settled(6)
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    to_ann = received(sink, "ann@example.org")
    assert len(to_ann) == 4
    assert "is now closed" in to_ann[3].get_body(("plain",)).get_content()
    assert d.scalar("select status from ticket where id = 1") == "open"  # ann's reply reopened
    events = [r[0] for r in d.query("select detail from event where ticket_id = 1")]
    assert any("answered -> closed (#close by alice@example.com)" in e for e in events)
    assert any("-> bob@example.com (#assign Bob by alice@example.com)" in e for e in events)
