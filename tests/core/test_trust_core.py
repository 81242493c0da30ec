"""Addresses, identity and caps: the pure parts of the trust rules, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from maildesk.config.files import load_rules
from maildesk.core.address import parse_addresses
from maildesk.core.caps import CAPPED_HOUR, CAPPED_TICKET, NotifyLimits, Recent, cap_notifications
from maildesk.core.classify import classify
from maildesk.core.identity import Trust, authorise
from maildesk.core.parse import parse_mail
from maildesk.core.replytoken import bounce_address, reply_address, verify_bounce

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules.yaml")
KEY = b"unit-key"


@pytest.mark.parametrize(
    ("value", "addresses", "problem"),
    [
        ("=?utf-8?q?Ann=0D=0ABcc:_evil@evil.test?= <p1@cust.test>", ["p1@cust.test"], None),
        ("=?utf-8?q?ann@example.org?= <mallory@evil.test>", ["mallory@evil.test"], None),
        ('<"victim@evil.test,x"@attacker.test>', [], "quoted or unusual local part"),
        ('"bob@example.com,"@attacker.test', [], "quoted or unusual local part"),
        ("Ann <ann@example.org>, grp: c@d.org;", ["ann@example.org", "c@d.org"], None),
        ("x\x00y@ex.org", [], "control character"),
        # Folded (RFC 5322 2.2.3): every address stays; a line break not followed by
        # white space is no fold and no address.
        ("a@x.org,\r\n\tb@y.org,\r\n c@z.org", ["a@x.org", "b@y.org", "c@z.org"], None),
        ("a@x.org,\r\nb@y.org", ["a@x.org"], "control character"),
        ("a@[127.0.0.1]", [], "not a host name"),
        ("just a name", [], "no local part or domain"),
        ("Иван <иван@пример.рф>", ["иван@пример.рф"], None),
        ("Ann (comment) <A.B+c@Ex.ORG>", ["a.b+c@ex.org"], None),
    ],
)
def test_addresses_come_only_from_the_addr_spec(
    value: str, addresses: list[str], problem: str | None
) -> None:
    parsed = parse_addresses("From", [value])
    assert [a for _, a in parsed.addresses] == addresses
    if problem:
        assert any(problem in p for p in parsed.problems), parsed.problems
    else:
        assert parsed.problems == ()


def test_a_decoded_display_name_stays_one_line_for_display_only() -> None:
    mail = parse_mail(
        b"From: =?utf-8?q?Ann=0D=0ABcc:_evil@evil.test?= <p1@cust.test>\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )
    assert mail.from_addr == "p1@cust.test"
    assert mail.from_name == "Ann Bcc: evil@evil.test"


def test_one_bad_reference_is_dropped_and_the_rest_kept() -> None:
    mail = parse_mail(
        b"From: ann@example.org\r\nSubject: Re: hi\r\nMessage-ID: <bad\x00id@x>\r\n"
        b"In-Reply-To: <good-1@x>\r\nReferences: <bad\x01ref@x> <good-2@x>\r\n\r\nbody\x00\r\n"
    )
    assert mail.in_reply_to == ("good-1@x",)
    assert mail.references == ("good-2@x",)
    assert mail.message_id is None and mail.dedupe_key.startswith("sha256:")
    assert "\x00" not in mail.text
    assert len(mail.dropped) == 2


def _mail(sender: str, to: str = "support@localhost", extra: str = "") -> object:
    return parse_mail(
        f"From: {sender}\r\nTo: {to}\r\nSubject: [MD-1] hi\r\n{extra}\r\nbody\r\n".encode()
    )


TOKEN = reply_address("support@localhost", 1, "alice@example.com", KEY)


@pytest.mark.parametrize(
    ("sender", "to", "extra", "trusted", "role", "via"),
    [
        ("alice@example.com", TOKEN, "", (), "staff", "reply_token"),
        ("alice@example.com", "support@localhost", "", (), "customer", "none"),
        ("bob@example.com", TOKEN, "", (), "customer", "none"),  # alice's token
        ("alice@example.com", TOKEN.replace("+t1.", "+t2."), "", (), "customer", "none"),
        (
            "alice@example.com",
            "support@localhost",
            "Authentication-Results: mx.test; dkim=pass header.d=example.com\r\n",
            ("mx.test",),
            "staff",
            "dkim",
        ),
        (
            "alice@example.com",
            "support@localhost",
            "Authentication-Results: mx.test; dmarc=pass header.from=example.com\r\n",
            ("mx.test",),
            "staff",
            "dmarc",
        ),
        (  # untrusted authserv-id
            "alice@example.com",
            "support@localhost",
            "Authentication-Results: evil.test; dkim=pass header.d=example.com\r\n",
            ("mx.test",),
            "customer",
            "none",
        ),
        (  # only the topmost header of the trusted MTA counts
            "alice@example.com",
            "support@localhost",
            "Authentication-Results: mx.test; dkim=fail header.d=example.com\r\n"
            "Authentication-Results: mx.test; dkim=pass header.d=example.com\r\n",
            ("mx.test",),
            "customer",
            "none",
        ),
        (  # a pass for another domain
            "alice@example.com",
            "support@localhost",
            "Authentication-Results: mx.test; dkim=pass header.d=evil.test\r\n",
            ("mx.test",),
            "customer",
            "none",
        ),
        ("=?utf-8?q?alice@example.com?= <m@evil.test>", TOKEN, "", (), "customer", "none"),
        ("ann@example.org", "support@localhost", "", (), "customer", "none"),
    ],
)
def test_staff_are_who_they_prove_to_be(
    sender: str, to: str, extra: str, trusted: tuple[str, ...], role: str, via: str
) -> None:
    identity = authorise(_mail(sender, to, extra), [to], Trust(RULES, KEY, frozenset(trusted)))  # type: ignore[arg-type]
    assert (identity.role, identity.via) == (role, via), identity.reason
    claims_staff = "example.com" in sender
    assert (identity.spoof is not None) == (claims_staff and role == "customer")


def test_bounce_tokens_are_bound_to_their_outbox_row() -> None:
    address = bounce_address("support@localhost", 17, KEY)
    assert verify_bounce(address, KEY) == 17
    assert verify_bounce(address.replace("+b17.", "+b18."), KEY) is None
    assert verify_bounce(address, b"other") is None
    assert verify_bounce("support@localhost", KEY) is None


@pytest.mark.parametrize(
    "subject",
    ["Автоответ: Re: [MD-1] x", "Automatic reply: [MD-1] x", "Out of Office: back Monday",
     "Abwesenheitsnotiz: x", "Réponse automatique : x"],
)
def test_auto_reply_subjects_alone_mark_an_auto_reply(subject: str) -> None:
    mail = parse_mail(f"From: x@ex.org\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())
    assert classify(mail, "x@ex.org", frozenset({"support@localhost"})).kind == "auto_reply"


def test_notification_caps_per_ticket_and_per_hour_with_one_notice_each() -> None:
    limits = NotifyLimits(per_hour=10, per_ticket=3)
    fresh = Recent({}, {}, frozenset())
    assert cap_notifications(("a", "b"), fresh, limits).keep == ("a", "b")
    busy = Recent({"a": 3, "b": 10}, {"a": 3}, frozenset())
    capped = cap_notifications(("a", "b"), busy, limits)
    assert capped.keep == ()
    assert capped.notices == (("a", CAPPED_TICKET), ("b", CAPPED_HOUR))
    notices = frozenset({("a", CAPPED_TICKET), ("b", CAPPED_HOUR)})
    told = Recent({"a": 3, "b": 10}, {"a": 3}, notices)
    assert cap_notifications(("a", "b"), told, limits).notices == ()
