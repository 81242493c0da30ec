"""Releasing a held or quarantined ticket as ham (pure): who gets which mail."""

from __future__ import annotations

from dataclasses import replace

from maildesk.core.classify import classify
from maildesk.core.parse import parse_mail
from maildesk.core.release import decide_release
from tests.core.test_core_decide import FRESH, POLICY, ticket

MAIL = parse_mail(
    b"From: ann@customer.org\r\nTo: support@localhost\r\nSubject: Invoice\r\n"
    b"Message-ID: <held@x>\r\n\r\nWhere is my invoice?\r\n"
)
KIND = classify(MAIL, "ann@customer.org", POLICY.own_addresses)


def test_a_held_ticket_released_sends_the_held_confirmation_only() -> None:
    held = replace(ticket(status="held"), language="ru")
    release = decide_release(MAIL, KIND, FRESH, held, "held", POLICY, "alice@example.com")
    assert [(m.template, m.recipients, m.language) for m in release.mails] == [
        ("confirmation", ("ann@customer.org",), "ru")
    ]
    assert release.refusal is None
    assert release.events == (("status", "held -> new (released as ham)"),)


def test_a_quarantined_ticket_released_tells_staff_who_never_heard_of_it() -> None:
    unassigned = ticket(status="spam", assignee=None)
    release = decide_release(MAIL, KIND, FRESH, unassigned, "spam", POLICY, "alice@example.com")
    told = [m.recipients for m in release.mails if m.template == "notification"]
    assert told == [("bob@example.com",)]  # the admins, not the one who released it
    by_bob = decide_release(MAIL, KIND, FRESH, unassigned, "spam", POLICY, "bob@example.com")
    assert [m.template for m in by_bob.mails] == ["confirmation"]


def test_the_loop_guards_still_hold_the_confirmation_back() -> None:
    busy = replace(FRESH, auto_replies_last_hour=POLICY.auto_reply_limit_per_hour)
    release = decide_release(MAIL, KIND, busy, ticket(status="held"), "held", POLICY, "x@y.z")
    assert release.mails == ()
    assert release.refusal is not None and "automatic replies" in release.refusal
    assert ("no_confirmation", release.refusal) in release.events
