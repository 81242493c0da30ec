"""The ticket's life by mail: the customer is told of changes, rates the answer.
Real `maildesk run`, real SMTP in, an aiosmtpd sink as the relay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import text

from maildesk.core.replytoken import rating_address, reply_address
from tests.conftest import maildesk_cli, wait_for
from tests.e2e.test_staff_answers import KEY, received, staff_mail
from tests.mailkit import make_mail, send


def plain(message: EmailMessage) -> str:
    return str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_resolution_mail_carries_answer_history_and_a_rating_round_trip(  # type: ignore[no-untyped-def]
    start_daemon, relay
) -> None:
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    wait_for(lambda: received(sink, "alice@example.com"))
    assert d.scalar("select assignee from ticket where id = 1") == "alice@example.com"
    notification = str(received(sink, "alice@example.com")[0]["Message-ID"])
    token = reply_address("support@localhost", 1, "alice@example.com", KEY)

    def settled(n: int) -> None:
        wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == n)
        wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)

    # alice resolves with an answer: ONE mail, the answer on top, the history below
    send(d.port, staff_mail("alice@example.com", token,
                            "#resolve\n#time 15m\n\nReplace the toner, it will stop smoking.",
                            notification), rcpts=[token], mail_from="alice@example.com")
    settled(2)
    to_ann = received(sink, "ann@example.org")
    assert len(to_ann) == 2  # the confirmation, then the resolution
    resolution = to_ann[1]
    text = plain(resolution)
    assert text.index("Replace the toner") < text.index("resolved") < text.index("on fire")
    assert "#resolve" not in text and "#time" not in text
    good = rating_address("support@localhost", 1, "good", KEY)
    bad = rating_address("support@localhost", 1, "bad", KEY)
    assert good in text and bad in text
    html = str(resolution.get_body(("html",)).get_content())  # type: ignore[union-attr]
    assert f'href="mailto:{bad}' in html
    assert resolution["Auto-Submitted"] is None  # a person's answer is in it
    assert resolution["In-Reply-To"] == "<ann-1@example.org>"
    row = d.query("select status, time_spent_minutes, resolved_at, first_response_at"
                  " from ticket")[0]
    assert row[0] == "resolved" and row[1] == 15 and row[2] is not None and row[3] is not None

    # a forged rating address (wrong MAC) rates nothing
    forged = "support+rate.1.0123456789.good@localhost"
    send(d.port, make_mail(to=forged, subject="Good (MD-1)", body="forged"), rcpts=[forged])
    settled(3)
    assert d.scalar("select rating from ticket where id = 1") is None

    # ann clicks "bad": the rating is kept, she is asked why, alice is told
    send(d.port, make_mail(to=bad, subject="Bad (MD-1)", body=""), rcpts=[bad])
    settled(4)
    assert d.scalar("select rating from ticket where id = 1") == "bad"
    assert d.scalar("select status from ticket where id = 1") == "resolved"  # not reopened
    ask = received(sink, "ann@example.org")[-1]
    assert "what went wrong" in plain(ask)
    why = rating_address("support@localhost", 1, "why", KEY)
    assert ask["Reply-To"].addresses[0].addr_spec == why
    assert ask["Auto-Submitted"] is not None  # automatic: an autoresponder must not answer
    wait_for(lambda: any("Rating from the customer" in plain(m)
                         for m in received(sink, "alice@example.com")))

    # her reason comes back to the .why address: kept on the ticket, alice reads it
    send(d.port, make_mail(to=why, subject="Re: [MD-1] Printer",
                           body="It still smokes after the new toner.\n\n> what went wrong\n"),
         rcpts=[why])
    settled(5)
    assert d.scalar("select rating_comment from ticket where id = 1") == (
        "It still smokes after the new toner.")
    wait_for(lambda: any("It still smokes" in plain(m)
                         for m in received(sink, "alice@example.com")))
    # a second "bad" does not ask again
    asked = len(received(sink, "ann@example.org"))
    send(d.port, make_mail(to=bad, subject="Bad (MD-1)", body="", message_id="<bad-2@x>"),
         rcpts=[bad])
    settled(6)
    assert len(received(sink, "ann@example.org")) == asked
    events = [r[0] for r in d.query("select detail from event where kind = 'rating'")]
    assert any(e.startswith("bad from ann@example.org") for e in events)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_assignment_closure_and_reopen_are_told_in_the_customers_language(  # type: ignore[no-untyped-def]
    start_daemon, relay
) -> None:
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    customer = "anna.petrova@yandex.ru"
    send(d.port, make_mail(sender=f"Анна Петрова <{customer}>", subject="Не приходит счёт",
                           body="Здравствуйте! Не приходит счёт за ноябрь, проверьте, пожалуйста.",
                           message_id="<anna-1@yandex.ru>"), mail_from=customer)
    assignee = wait_for(lambda: d.scalar("select assignee from ticket where id = 1"))
    wait_for(lambda: received(sink, assignee))  # bob: a bill goes to the billing group
    assert d.scalar("select language from ticket where id = 1") == "ru"
    notification = str(received(sink, assignee)[0]["Message-ID"])
    token = reply_address("support@localhost", 1, assignee, KEY)

    def staff(body: str) -> None:
        send(d.port, staff_mail(assignee, token, body, notification), rcpts=[token],
             mail_from=assignee)

    def settled(n: int) -> None:
        wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == n)
        wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)

    other = "Bob" if assignee == "alice@example.com" else "Alice"
    staff(f"#assign {other}")
    settled(2)
    update = plain(received(sink, customer)[-1])
    assert f"занимается {other}" in update
    staff("#close")
    settled(3)
    assert "закрыта" in plain(received(sink, customer)[-1])
    staff("#reopen")
    settled(4)
    assert "снова открыта" in plain(received(sink, customer)[-1])
    assert d.scalar("select status from ticket where id = 1") == "open"
    assert d.scalar("select closed_at from ticket where id = 1") is not None
    assert len(received(sink, customer)) == 4  # confirmation + three updates


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_operator_changes_a_ticket_from_the_shell(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_OPERATOR="alice@example.com")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    send(d.port, make_mail(sender="carl@example.org", subject="Scanner"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)

    done = maildesk_cli(d.env, "do", "MD-1", "#assign bob", "#priority urgent", "#time 1h30m")
    assert "-> bob@example.com (#assign bob by alice@example.com)" in done.stdout
    row = d.query("select assignee, priority, time_spent_minutes from ticket where id = 1")[0]
    assert tuple(row) == ("bob@example.com", "urgent", 90)
    wait_for(lambda: any("Bob is now handling" in plain(m)
                         for m in received(sink, "ann@example.org")))
    actors = [r[0] for r in d.query("select actor from event where kind = 'priority'")]
    assert actors == ["alice@example.com (maildesk do)"]

    # one bad line: nothing applied, every bad line named, exit status 1
    refused = maildesk_cli(d.env, "do", "MD-1", "#close", "#priority hgih", "#asign x",
                           "hello", check=False)
    assert refused.returncode == 1
    assert "nothing applied" in refused.stderr and "did you mean high" in refused.stderr
    assert "#asign x" in refused.stderr and "hello: each argument" in refused.stderr
    assert d.scalar("select status from ticket where id = 1") != "closed"
    nobody = maildesk_cli(d.env, "do", "MD-1", "#close", "--as", "mallory@evil.test",
                          check=False)
    assert nobody.returncode == 1 and "not a staff member" in nobody.stderr
    missing = maildesk_cli(d.env, "do", "MD-99", "#close", check=False)
    assert missing.returncode == 1 and "no ticket MD-99" in missing.stderr

    listed = json.loads(maildesk_cli(d.env, "tickets", "--assignee", "bob@example.com",
                                     "--json").stdout)
    bobs = [f"MD-{r[0]}" for r in d.query(
        "select id from ticket where assignee = 'bob@example.com' order by id desc")]
    assert [t["tid"] for t in listed] == bobs and "MD-1" in bobs
    assert next(t for t in listed if t["tid"] == "MD-1")["time_spent_minutes"] == 90
    by_requester = json.loads(maildesk_cli(d.env, "tickets", "--requester", "carl@example.org",
                                           "--json").stdout)
    assert [t["tid"] for t in by_requester] == ["MD-2"]
    # nobody answered within the (past) due time of a backdated ticket: overdue
    with d.engine.begin() as conn:
        conn.execute(text("update ticket set first_response_due = :t where id = 2"),
                     {"t": datetime.now(UTC) - timedelta(hours=1)})
    overdue = json.loads(maildesk_cli(d.env, "tickets", "--overdue", "--json").stdout)
    assert [t["tid"] for t in overdue] == ["MD-2"]
    maildesk_cli(d.env, "do", "2", "#resolve")
    assert json.loads(maildesk_cli(d.env, "tickets", "--overdue", "--json").stdout) == []
    resolved = json.loads(maildesk_cli(d.env, "tickets", "--status", "resolved", "--json").stdout)
    assert [t["tid"] for t in resolved] == ["MD-2"] and resolved[0]["resolved_at"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_co_assignee_cc_canned_merge_and_time_by_mail(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}")
    send(d.port, make_mail(subject="Printer", message_id="<ann-1@example.org>"))
    wait_for(lambda: received(sink, "alice@example.com"))
    send(d.port, make_mail(sender="carl@example.org", subject="Printer too",
                           message_id="<carl-1@example.org>"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    assignee2 = wait_for(lambda: d.scalar("select assignee from ticket where id = 2"))
    wait_for(lambda: any("MD-2" in str(m["Subject"]) for m in received(sink, assignee2)))
    note1 = str(received(sink, "alice@example.com")[0]["Message-ID"])
    note2 = str(next(m for m in received(sink, assignee2) if "MD-2" in str(m["Subject"]))
                ["Message-ID"])
    token1 = reply_address("support@localhost", 1, "alice@example.com", KEY)
    token2 = reply_address("support@localhost", 2, assignee2, KEY)
    done = 2

    def staff(body: str, token: str = token1, note: str = note1,
              who: str = "alice@example.com") -> None:
        nonlocal done
        send(d.port, staff_mail(who, token, body, note), rcpts=[token], mail_from=who)
        done += 1
        wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == done)
        wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)

    staff("#co bob\n#cc add Dora <dora@example.org>\n#canned restart\n\nAlice")
    people = dict(d.query("select address, role from participant where ticket_id = 1"))
    assert people["bob@example.com"] == "co" and people["dora@example.org"] == "cc"
    answer = received(sink, "ann@example.org")[-1]
    text = plain(answer)
    assert "switch the device off" in text and text.rstrip().endswith("Alice")
    assert "dora@example.org" in str(answer["Cc"])
    assert any("switch the device off" in plain(m) for m in received(sink, "bob@example.com"))

    staff('#cc add "x,y"@evil.test')  # an address a relay would read differently
    refusal = received(sink, "alice@example.com")[-1]
    assert str(refusal["Subject"]).startswith("[not applied]")
    assert "not a usable address" in plain(refusal)
    staff("#cc remove dora@example.org\n#cc remove ann@example.org")
    assert "the requester cannot be removed" in plain(received(sink, "alice@example.com")[-1])
    staff("#cc remove dora@example.org")
    assert d.scalar("select count(*) from participant where address = 'dora@example.org'") == 0

    staff("#merge MD-9", token2, note2, assignee2)
    assert "no ticket MD-9" in plain(received(sink, assignee2)[-1])
    staff("#merge MD-1", token2, note2, assignee2)
    assert tuple(d.query("select status, merged_into from ticket where id = 2")[0]) == (
        "closed", 1)
    assert d.scalar("select role from participant where ticket_id = 1"
                    " and address = 'carl@example.org'") == "cc"
    assert not any("closed" in plain(m) for m in received(sink, "carl@example.org")[1:])
    # carl answers on his old ticket: the mail lands on the survivor
    send(d.port, make_mail(sender="carl@example.org", subject="Re: [MD-2] Printer too",
                           body="It is the same printer.", message_id="<carl-2@example.org>"))
    done += 1
    wait_for(lambda: d.scalar("select count(*) from inbound where status = 'done'") == done)
    assert d.scalar("select ticket_id from message where message_id = 'carl-2@example.org'") == 1
    assert d.scalar("select count(*) from ticket") == 2

    staff("#resolve")  # no #time yet: alice is asked for it
    ask = received(sink, "alice@example.com")[-1]
    assert str(ask["Subject"]).startswith("[time spent?]") and "#time 30m" in plain(ask)
    ask_token = ask["Reply-To"].addresses[0].addr_spec
    staff("#time 45m", ask_token, str(ask["Message-ID"]))
    assert d.scalar("select time_spent_minutes from ticket where id = 1") == 45
    assert d.scalar("select status from ticket where id = 1") == "resolved"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_new_for_opens_a_ticket_on_the_customers_behalf(start_daemon, relay) -> None:  # type: ignore[no-untyped-def]
    sink = relay()
    sink.start()
    d = start_daemon(MAILDESK_OUTBOUND=f"smtp://127.0.0.1:{sink.port}",
                     MAILDESK_TRUSTED_AUTHSERV_ID="mx.test")
    passed = {"Authentication-Results": "mx.test; dkim=pass header.d=example.com"}

    def forward(body: str, subject: str = "Fwd: Printer on fire",
                proof: dict[str, str] | None = None) -> None:
        send(d.port, staff_mail("alice@example.com", "support@localhost", body, None,
                                subject=subject, extra=passed if proof is None else proof),
             mail_from="alice@example.com")

    forward("#new-for\n\nPlease help her.\n\n---------- Forwarded message ---------\n"
            "From: Ann Customer <ann@example.org>\nDate: Mon, 23 Nov 2026 at 10:00\n"
            "Subject: Printer on fire\nTo: alice@example.com\n\nMy printer is on fire.\n")
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    row = d.query("select requester, requester_name, subject from ticket")[0]
    assert tuple(row) == ("ann@example.org", "Ann Customer", "Printer on fire")
    confirmation = wait_for(lambda: received(sink, "ann@example.org"))[0]
    assert "[MD-1]" in str(confirmation["Subject"])
    events = [r[0] for r in d.query("select detail from event where ticket_id = 1")]
    assert "by alice@example.com on behalf of ann@example.org (#new-for)" in events

    # Outlook's forward, the customer named explicitly: that address wins
    forward("#new-for carl@example.org\n\n-----Original Message-----\n"
            "From: Ann Customer [mailto:ann@example.org]\nSent: Monday\n"
            "Subject: Scanner\n\nThe scanner too.\n", subject="FW: Scanner")
    wait_for(lambda: d.scalar("select count(*) from ticket") == 2)
    assert d.scalar("select requester from ticket where id = 2") == "carl@example.org"

    # no customer to be found: nothing opens, alice is told why
    forward("#new-for\n\nJust a note without a forward.\n", subject="Note")
    wait_for(lambda: any(str(m["Subject"]).startswith("[not applied]")
                         for m in received(sink, "alice@example.com")))
    assert d.scalar("select count(*) from ticket") == 2
    refusal = next(m for m in received(sink, "alice@example.com")
                   if str(m["Subject"]).startswith("[not applied]"))
    assert "no customer address" in plain(refusal)
    # a spoofed alice (no proof) is a customer: her #new-for is text, she is the requester
    forward("#new-for mallory@evil.test\n\nHi\n", subject="Spoof", proof={})
    wait_for(lambda: d.scalar("select count(*) from ticket") == 3)
    assert d.scalar("select requester from ticket where id = 3") == "alice@example.com"
