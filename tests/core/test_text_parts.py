"""A text part of an outgoing mail is built by hand (maildesk.core.compose._text_part):
it must be, byte for byte, what the stdlib's MIMEText makes of the same text; and a
mail without files is written directly: byte for byte what the generator writes."""

from __future__ import annotations

import email.policy
import random
from datetime import UTC, datetime
from email.mime.text import MIMEText
from email.parser import BytesParser
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.core import compose as compose_module
from maildesk.core.compose import _SMTP_COMPAT, _text_part, compose
from maildesk.core.render import RenderedMail

# Any text a template can render: no lone surrogates (UTF-8 cannot carry them).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=400, deadline=None)
@given(text=TEXT, subtype=st.sampled_from(["plain", "html"]))
def test_a_text_part_is_what_mimetext_makes(text: str, subtype: str) -> None:
    assert _text_part(text, subtype).as_bytes(policy=_SMTP_COMPAT) == MIMEText(
        text, subtype, "utf-8"
    ).as_bytes(policy=_SMTP_COMPAT)


def test_long_russian_text_and_line_ends_survive_the_round_trip() -> None:
    text = "Здравствуйте!\r\nВаш запрос принят.\n" * 40 + "x" * 57
    part = _text_part(text, "plain")
    assert part.get_payload(decode=True).decode("utf-8") == text
    assert part.get_content_charset() == "utf-8" and part["Content-Transfer-Encoding"] == "base64"


# A whole mail without files is written directly (compose._flat_alternative); with a
# header that needs folding it goes through the generator. Both must give the same bytes.
ADDRESS = st.from_regex(r"[a-z0-9._+-]{1,20}@[a-z0-9-]{1,20}\.(org|com)", fullmatch=True)
MSGID = st.from_regex(r"[A-Za-z0-9.$%_-]{1,40}@[a-z0-9.-]{1,30}", fullmatch=True)


def _compose_both(kwargs: dict[str, Any]) -> tuple[bytes, bytes]:
    random.seed(11)
    direct = compose(**kwargs).raw
    with mock.patch.object(compose_module, "_flat_alternative", lambda headers, body: None):
        random.seed(11)
        generated = compose(**kwargs).raw
    return direct, generated


@settings(max_examples=3000, deadline=None)
@given(
    name=st.text(max_size=40), to=st.lists(ADDRESS, min_size=1, max_size=3),
    cc=st.lists(ADDRESS, max_size=2), subject=TEXT, text=TEXT, html=TEXT,
    references=st.lists(MSGID, max_size=4), in_reply_to=st.none() | MSGID,
    reply_to=st.none() | ADDRESS, automatic=st.booleans(),
)
def test_a_mail_written_directly_is_what_the_generator_writes(
    name: str, to: list[str], cc: list[str], subject: str, text: str, html: str,
    references: list[str], in_reply_to: str | None, reply_to: str | None, automatic: bool,
) -> None:
    direct, generated = _compose_both({
        "from_addr": "support@example.com", "from_name": name, "to": to, "cc": cc,
        "subject": subject, "body": RenderedMail(text=text, html=html),
        "now": datetime(2026, 11, 24, 19, 0, tzinfo=UTC), "in_reply_to": in_reply_to,
        "references": references, "reply_to": reply_to, "automatic": automatic,
        "message_id": "m.1@example.com",
    })
    assert direct == generated


def test_a_plain_confirmation_is_written_directly_and_reads_back() -> None:
    """The common case takes the direct path (the generator is never asked), and any
    parser reads it back: headers, both parts, the Russian text."""
    kwargs: dict[str, Any] = {
        "from_addr": "support@example.com", "from_name": "Support", "to": ["ivan@example.org"],
        "subject": "[#1042] Не работает выгрузка", "now": datetime(2026, 11, 24, tzinfo=UTC),
        "body": RenderedMail(text="Здравствуйте!\nМы получили ваше письмо.", html="<p>Привет</p>"),
        "in_reply_to": "a.1@example.org", "message_id": "m.2@example.com",
    }
    with mock.patch.object(compose_module, "_mime_tree", side_effect=AssertionError("slow")):
        raw = compose(**kwargs).raw
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert str(parsed["Subject"]) == "[#1042] Не работает выгрузка"
    assert parsed["In-Reply-To"] == "<a.1@example.org>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed.get_content_type() == "multipart/alternative" and not parsed.defects
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Здравствуйте!\nМы получили ваше письмо."
    assert html.get_content() == "<p>Привет</p>"
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")) and b"\n" not in raw.replace(
        b"\r\n", b"")
