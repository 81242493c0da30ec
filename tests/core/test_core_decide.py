"""The pure decision core: rules, assignment, and `decide` over every kind of mail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from maildesk.config.files import load_rules, load_sla
from maildesk.core.classify import classify
from maildesk.core.decide import (
    Decision,
    Facts,
    Policy,
    SenderFacts,
    ThreadMatch,
    TicketState,
    Workload,
    decide,
)
from maildesk.core.identity import Trust, authorise
from maildesk.core.parse import parse_mail
from maildesk.core.replytoken import reply_address
from maildesk.core.rules import evaluate, pick_assignee
from maildesk.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RULES = load_rules(REPO / "rules.yaml")
POLICY = Policy(
    rules=RULES,
    sla=load_sla(REPO / "sla.yaml"),
    own_addresses=frozenset({"support@localhost"}),
    default_language="en",
    auto_reply_limit_per_hour=10,
)
KEY = b"unit-test-key"
TRUST = Trust(RULES, KEY)
FRESH = SenderFacts(auto_replies_last_hour=0, suppressed=False)
IDLE = Workload(open_counts={}, last_assigned={})


def mail(
    sender: str = "ann@customer.org",
    subject: str = "Help",
    headers: str = "",
    body: str = "Please help me with my account, it does not work.",
) -> object:
    return parse_mail(
        f"From: {sender}\r\nTo: support@localhost\r\nSubject: {subject}\r\n"
        f"Message-ID: <m@x>\r\n{headers}\r\n{body}\r\n".encode()
    )


def run(
    m: object,
    thread: ThreadMatch | None = None,
    sender: SenderFacts = FRESH,
    spam: str = "ham",
    envelope: str = "ann@customer.org",
    rcpt: str = "support@localhost",
) -> Decision:
    kind = classify(m, envelope, POLICY.own_addresses)  # type: ignore[arg-type]
    identity = authorise(m, [rcpt], TRUST)  # type: ignore[arg-type]
    facts = Facts(kind, identity, thread or ThreadMatch(None, "none"), sender, IDLE,
                  spam)  # type: ignore[arg-type]
    return decide(m, facts, POLICY, NOW)  # type: ignore[arg-type]


def ticket(status: str = "open", assignee: str | None = "alice@example.com") -> TicketState:
    return TicketState(
        id=7,
        status=status,
        subject="Help",
        requester="ann@customer.org",
        requester_name="",
        participants=frozenset({"ann@customer.org"}),
        assignee=assignee,
        group="l1",
        priority="normal",
        category="general",
        sla_level="standard",
        language="en",
        first_response_due=None,
    )


def test_new_ticket_gets_confirmation_and_staff_notification() -> None:
    d = run(mail())
    assert d.action == "new_ticket" and d.new_ticket is not None
    assert d.new_ticket.status == "new" and d.new_ticket.sla_level == "standard"
    # 24 working hours in Moscow from Monday 13:00: 6 + 9 + 9, so Wednesday 19:00 MSK.
    assert d.new_ticket.first_response_due == datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    assert [(i.template, i.recipients) for i in d.mails] == [
        ("confirmation", ("ann@customer.org",)),
        ("notification", (d.new_ticket.assignee,)),
    ]


def test_rules_sla_and_language() -> None:
    d = run(
        mail(
            sender="boss@partner.example",
            subject="Срочно: счёт не пришёл",
            body="Добрый день, счёт за ноябрь так и не пришёл, пришлите пожалуйста.",
        )
    )
    assert d.new_ticket is not None
    assert d.new_ticket.priority == "high" and d.new_ticket.sla_level == "partner"
    assert d.new_ticket.first_response_due == NOW + timedelta(hours=4)  # Monday 17:00 MSK
    assert d.new_ticket.language == "ru"
    assert "VIP partners" in d.new_ticket.rules_fired
    billing = run(mail(subject="Invoice 42 is wrong"))
    assert billing.new_ticket is not None and billing.new_ticket.group == "billing"
    assert billing.new_ticket.assignee == "bob@example.com"  # only member of billing


def test_round_robin_and_least_open() -> None:
    assert pick_assignee(RULES, "l1", {}, None) == "alice@example.com"
    assert pick_assignee(RULES, "l1", {}, "alice@example.com") == "bob@example.com"
    assert pick_assignee(RULES, "l1", {}, "bob@example.com") == "alice@example.com"
    assert pick_assignee(RULES, "billing", {"bob@example.com": 3}, None) == "bob@example.com"


def test_reply_appends_and_reopens_closed() -> None:
    for status, reopen in (("open", False), ("resolved", True), ("closed", True)):
        d = run(mail(subject="Re: [MD-7] Help"), ThreadMatch(ticket(status), "tid"))
        assert (d.action, d.reopen) == ("append", reopen)
        assert [i.event for i in d.mails] == ["reopened" if reopen else "reply"]
        assert not any(i.template == "confirmation" for i in d.mails)


def test_auto_reply_never_changes_a_ticket() -> None:
    d = run(mail(headers="Auto-Submitted: auto-replied\r\n"), ThreadMatch(ticket("closed"), "tid"))
    assert d.action == "append" and d.message_kind == "auto_reply"
    assert not d.reopen and d.mails == ()


def test_auto_reply_without_ticket_creates_one_without_confirmation() -> None:
    d = run(mail(headers="Auto-Submitted: auto-generated\r\n"))
    assert d.action == "new_ticket"
    assert [i.template for i in d.mails] == ["notification"]


@pytest.mark.parametrize(
    ("facts", "reason"),
    [(SenderFacts(10, False), "10 automatic replies"), (SenderFacts(0, True), "hard-bounced")],
)
def test_no_confirmation_over_the_cap_or_after_a_bounce(facts: SenderFacts, reason: str) -> None:
    d = run(mail(), sender=facts)
    assert [i.template for i in d.mails] == ["notification"]
    assert any(k == "no_confirmation" and reason in v for k, v in d.events)


def test_spam_bands() -> None:
    spam = run(mail(), spam="spam")
    assert spam.new_ticket is not None and spam.new_ticket.status == "spam" and spam.mails == ()
    unsure = run(mail(), spam="unsure")
    assert unsure.new_ticket is not None and unsure.new_ticket.status == "held"
    assert [(i.template, i.event) for i in unsure.mails] == [("notification", "possible_spam")]
    reply = run(mail(), ThreadMatch(ticket(), "tid"), spam="spam")
    assert reply.action == "append" and reply.message_kind == "customer"


def test_refused_thread_is_recorded_on_the_new_ticket() -> None:
    d = run(
        mail(sender="mallory@evil.example"),
        ThreadMatch(None, "none", refused=(7,)),
        envelope="mallory@evil.example",
    )
    assert d.action == "new_ticket"
    assert ("thread", "mail named ticket 7 but its sender is not on it") in d.events


def staff_reply(body: str, headers: str = "In-Reply-To: <notification@localhost>\r\n") -> Decision:
    token = reply_address("support@localhost", 7, "alice@example.com", KEY)
    return run(
        mail(sender="alice@example.com", subject="Re: [MD-7] Help", headers=headers, body=body),
        ThreadMatch(ticket(), "token"),
        envelope="alice@example.com",
        rcpt=token,
    )


def test_a_staff_reply_goes_to_the_customer_without_its_quote() -> None:
    d = staff_reply("Restart the printer.\r\n\r\n> Please help me\r\n")
    assert d.message_kind == "staff" and d.visibility == "public" and d.alerts == ()
    (answer,) = [i for i in d.mails if i.template == "answer"]
    assert answer.recipients == ("ann@customer.org",)
    assert answer.reply is not None and answer.reply.text == "Restart the printer."
    assert d.status == "answered" and d.first_response


def test_internal_and_automatic_staff_mail_never_reaches_the_customer() -> None:
    note = staff_reply("#internal\r\nShe called, it is the toner.\r\n")
    assert note.visibility == "internal" and note.status is None
    assert all(i.template != "answer" for i in note.mails)
    vacation = staff_reply("I am on vacation until Monday.", headers="")
    assert vacation.message_kind == "auto_reply" and vacation.mails == ()
    assert any(kind == "staff_auto" for kind, _ in vacation.events)


@pytest.mark.parametrize(
    "rcpt",
    [
        "support@localhost",  # no token at all
        reply_address("support@localhost", 7, "bob@example.com", KEY),  # minted for bob
        reply_address("support@localhost", 8, "alice@example.com", KEY).replace("t8", "t7"),
        reply_address("support@localhost", 7, "alice@example.com", b"other key"),
    ],
    ids=["no-token", "other-staff", "other-ticket", "forged-mac"],
)
def test_staff_from_without_a_valid_token_is_a_customer_and_the_admins_are_warned(
    rcpt: str,
) -> None:
    d = run(mail(sender="alice@example.com"), envelope="alice@example.com", rcpt=rcpt)
    assert all(i.template != "answer" for i in d.mails)
    assert d.message_kind == "customer"
    assert [a.kind for a in d.alerts] == ["spoof"]
    assert not any(i.template == "confirmation" for i in d.mails)  # no mail to the forged From
    assert any(kind == "identity" and detail.startswith("customer") for kind, detail in d.events)


def test_evaluate_stop_and_defaults() -> None:
    r = evaluate(RULES, mail(sender="x@partner.example", subject="invoice"))  # type: ignore[arg-type]
    assert r.fired == ("billing questions", "VIP partners")
    r = evaluate(RULES, mail())  # type: ignore[arg-type]
    assert (r.group, r.priority, r.category, r.fired) == ("l1", "normal", "general", ())


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "staff: [{name: A, email: a@x.org, groups: [nope]}]\n",
            ":1: staff.0.groups: unknown group",
        ),
        (
            "staff: []\nrules:\n  - name: r\n    then: {assign: ghost@x.org}\n",
            ":4: rules.0.then.assign: 'ghost@x.org' is not in staff",
        ),
        (
            "rules:\n  - name: r\n    when: {subject_matches: '(['}\n    then: {}\n",
            ":3: rules.0.when.subject_matches: invalid regular expression",
        ),
        ("staff:\n  - {name: A, email: not-an-address}\n", ":2: staff.0.email: not an email"),
        ("bogus_key: 1\n", ":1: bogus_key: Extra inputs are not permitted"),
        ("staff: [\n", ":2:"),
    ],
)
def test_rules_errors_name_file_and_line(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert any(p.startswith(str(path)) and expected in p for p in caught.value.problems), (
        caught.value.problems
    )
