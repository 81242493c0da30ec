"""A text part of an outgoing mail is built by hand (maildesk.core.compose._text_part):
it must be, byte for byte, what the stdlib's MIMEText makes of the same text."""

from __future__ import annotations

from email.mime.text import MIMEText

from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.core.compose import _SMTP_COMPAT, _text_part

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
