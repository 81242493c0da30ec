"""The pure text-handling core: TIDs, parsing, classification, tokens, templates."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest

from maildesk.config.files import load_templates
from maildesk.core.classify import classify
from maildesk.core.compose import compose
from maildesk.core.mimeparts import safe_filename
from maildesk.core.mimetext import guess_cyrillic
from maildesk.core.msgid import message_ids
from maildesk.core.parse import parse_mail
from maildesk.core.render import SAMPLE_CONTEXT, RenderedMail
from maildesk.core.replytoken import base_address, reply_address, verify
from maildesk.core.tid import clean_subject, find_tid, find_tids, parse_tid, tagged_subject
from maildesk.errors import MalformedMail

REPO = Path(__file__).resolve().parents[2]
OWN = frozenset({"support@localhost"})


@pytest.mark.parametrize(
    ("subject", "tid", "clean"),
    [
        ("[MD-42] Printer", 42, "Printer"),
        ("Re: [MD-42] Printer", 42, "Printer"),
        ("RE: AW: Fwd: [ md - 42 ] Printer", 42, "Printer"),
        ("Ответ: Отв: [MD-7] Принтер", 7, "Принтер"),
        ("Re[2]: [MD-7]  x", 7, "x"),
        ("Printer [MD-9]", 9, "Printer"),
        ("MD-5 hash of the file", None, "MD-5 hash of the file"),
        ("Fwd: hello", None, "hello"),
        ("", None, ""),
    ],
)
def test_tid_in_subjects(subject: str, tid: int | None, clean: str) -> None:
    assert find_tid(subject) == tid
    assert clean_subject(subject) == clean


@pytest.mark.parametrize(
    ("text", "number"), [("[MD-3]", 3), ("MD-3", 3), ("3", 3), ("md3", 3), ("x3", None), ("", None)]
)
def test_tid_as_typed_on_the_command_line(text: str, number: int | None) -> None:
    assert parse_tid(text) == number


def test_tagged_subject_is_one_line() -> None:
    assert tagged_subject(5, "Re: hi\r\nBcc: x@evil") == "[MD-5] hi Bcc: x@evil"


def _b64_word(text: str, charset: str) -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


@pytest.mark.parametrize("charset", ["koi8-r", "windows-1251", "utf-8"])
def test_russian_in_every_common_charset(charset: str) -> None:
    body = "Здравствуйте, не работает почта. Счёт приложен."
    raw = (
        f"From: {_b64_word('Пётр', charset)} <petr@example.ru>\r\n"
        f"Subject: {_b64_word('Вопрос по счёту', charset)}\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body.encode(charset)
    mail = parse_mail(raw)
    assert (mail.from_name, mail.subject, mail.text.strip()) == ("Пётр", "Вопрос по счёту", body)


@pytest.mark.parametrize("charset", ["koi8-r", "windows-1251"])
def test_unlabelled_or_unknown_charset_still_decodes(charset: str) -> None:
    body = "Добрый день! Прошу выставить счёт на оплату."
    for label in ("x-unknown-charset", None):
        ctype = f"text/plain; charset={label}" if label else "text/plain"
        raw = f"From: a@example.ru\r\nSubject: s\r\nContent-Type: {ctype}\r\n\r\n".encode()
        assert parse_mail(raw + body.encode(charset)).text.strip() == body


def test_guess_cyrillic_by_letter_ranges() -> None:
    text = "съешь же ещё этих мягких французских булок"
    assert guess_cyrillic(text.encode("koi8-r")) == "koi8-r"
    assert guess_cyrillic(text.encode("cp1251")) == "windows-1251"


def test_garbage_never_raises_and_keeps_something() -> None:
    mail = parse_mail(b"\x00\xff garbage without headers \xfe\r\n\r\n\x80\x81")
    assert mail.from_addr == "" and mail.message_id is None
    assert len(mail.content_hash) == 64


def test_bounds_raise_malformed() -> None:
    with pytest.raises(MalformedMail, match="header section has"):
        parse_mail(b"".join(b"X-H%d: v\n" % i for i in range(3000)) + b"\nbody")
    deep = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(30)
    )
    with pytest.raises(MalformedMail, match="nesting"):
        parse_mail(b"Subject: deep\nMIME-Version: 1.0\n" + deep)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\x.exe", "x.exe"),
        (".bashrc", "bashrc"),
        ("a\x00b.txt", "ab.txt"),
        ("", "attachment"),
        ("счёт.pdf", "счёт.pdf"),
    ],
)
def test_attachment_names_never_become_paths(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def _mail(headers: str, envelope_from: str | None = "a@example.org") -> object:
    raw = f"From: a@example.org\r\nSubject: s\r\n{headers}\r\nbody\r\n".encode()
    return classify(parse_mail(raw), envelope_from, OWN)


@pytest.mark.parametrize(
    ("headers", "envelope_from", "kind", "may_reply"),
    [
        ("", "a@example.org", "normal", True),
        ("Auto-Submitted: no\r\n", "a@example.org", "normal", True),
        ("Auto-Submitted: auto-replied\r\n", "a@example.org", "auto_reply", False),
        ("Auto-Submitted: auto-generated\r\n", "a@example.org", "auto_reply", False),
        ("X-Autoreply: yes\r\n", "a@example.org", "auto_reply", False),
        ("Precedence: bulk\r\n", "a@example.org", "normal", False),
        ("Precedence: list\r\n", "a@example.org", "normal", False),
        ("List-Id: <x.example.org>\r\n", "a@example.org", "normal", False),
        ("", "", "normal", False),  # null return path
    ],
)
def test_loop_prevention(headers: str, envelope_from: str, kind: str, may_reply: bool) -> None:
    result = _mail(headers, envelope_from)
    assert (result.kind, result.may_auto_reply) == (kind, may_reply)  # type: ignore[attr-defined]


def test_mailer_daemon_and_our_own_address_get_no_reply() -> None:
    for sender in ("MAILER-DAEMON@mx.example.org", "postmaster@x.org", "support@localhost"):
        mail = parse_mail(f"From: {sender}\r\nSubject: s\r\n\r\nb".encode())
        assert not classify(mail, "x@y.org", OWN).may_auto_reply


def test_delivery_report_is_a_bounce_with_its_original() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx\r\nContent-Type: multipart/report; report-type=delivery-status;"
        b' boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\n'
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; Gone@Example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <orig@localhost>\r\n"
        b"Subject: x\r\n\r\nbody\r\n--B--\r\n"
    )
    mail = parse_mail(raw)
    assert mail.report is not None
    assert mail.report.original_message_id == "orig@localhost"
    assert mail.report.failed_recipients == ("gone@example.org",) and mail.report.permanent
    assert classify(mail, "", OWN).kind == "bounce"


def test_reply_tokens() -> None:
    key = b"k"
    address = reply_address("support@localhost", 42, "alice@example.com", key)
    assert verify(address, "alice@example.com", key) == 42
    assert verify(address, "bob@example.com", key) is None  # minted for someone else
    assert verify(address.replace("t42", "t43"), "alice@example.com", key) is None
    assert base_address(address) == "support@localhost"


def test_templates_autoescape_html_and_render_text_as_is() -> None:
    templates = load_templates(REPO / "templates")
    context = {**SAMPLE_CONTEXT, "subject": "<script>alert(1)</script>"}
    rendered = templates.render("confirmation", "en", context)
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text


def test_missing_template_variable_is_an_error_not_a_blank() -> None:
    templates = load_templates(REPO / "templates")
    context = {k: v for k, v in SAMPLE_CONTEXT.items() if k != "sla_name"}
    with pytest.raises(jinja2.UndefinedError):
        templates.render("confirmation", "ru", context)


def test_composed_headers_refuse_injection() -> None:
    body = RenderedMail(text="t", html="<p>t</p>")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = compose(
        from_addr="support@localhost",
        from_name="Support",
        to=["a@example.org"],
        subject="hi\r\nBcc: victim@example.org",
        body=body,
        now=now,
    )
    head = out.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"Auto-Submitted: auto-replied" in head
    with pytest.raises(ValueError):
        compose(
            from_addr="support@localhost",
            from_name="Support\r\nBcc: x@y",
            to=["a@example.org\r\nBcc: x@y"],
            subject="s",
            body=body,
            now=now,
        )


@pytest.mark.parametrize("sender", ["@example.com", "user@", "@", "a b@example.com"])
def test_broken_sender_addresses_are_no_address(sender: str) -> None:
    mail = parse_mail(f"From: {sender}\r\nTo: ok@example.org, @x\r\n\r\nhi".encode())
    assert mail.from_addr == "" and mail.to == ("ok@example.org",)
    assert not classify(mail, "bounce@example.org", OWN).may_auto_reply


@pytest.mark.parametrize(
    ("subject", "tids"),
    [
        ("Re: [MD-12] Printer", [12]),
        ("AW: Fwd: RE: [MD-12] Printer", [12]),
        ("Re: MD-12 Printer", [12]),  # no brackets, right after a reply prefix
        ("MD-5 hash of the file", []),  # no reply prefix: text, not a tag
        ("Re: [MD- 12] Printer", [12]),  # Outlook's mangling
        ("Re: [MD-12 ] Printer", [12]),
        ("Fwd: [MD-3] Re: [MD-12] Printer", [12, 3]),  # the last tag first
        ("CMD-12 is broken", []),
        ("Printer MD-12x", []),
    ],
)
def test_ticket_ids_in_subjects(subject: str, tids: list[int]) -> None:
    assert find_tids(subject) == tids


@pytest.mark.parametrize(
    ("header", "ids"),
    [
        ("<a@b>", ["a@b"]),
        ("a@b", ["a@b"]),  # bare, as some list software writes it
        ("<a@b> (Ann's message of Tue)", ["a@b"]),
        ("Your message of Mon, 13 Jan 2025 12:40:07 -0600\n <a@b>", ["a@b"]),
        ("a@b c@d", ["a@b", "c@d"]),
        ("Your message of Mon, 13 Jan 2025", []),
    ],
)
def test_reply_references_with_and_without_brackets(header: str, ids: list[str]) -> None:
    assert list(message_ids(header)) == ids


def test_a_list_rewritten_from_names_the_author_and_the_list() -> None:
    mail = parse_mail(
        b"From: =?UTF-8?Q?=27Elias_St=C3=A5hlberg=27_via_blinux=2Dlist=40redhat=2Ecom?="
        b" <blinux-list@redhat.com>\n"
        b"Reply-To: Elias <elias@example.se>\nX-Original-From: Elias <elias@example.se>\n"
        b"To: blinux-list@redhat.com\nList-Post: <mailto:blinux-list@redhat.com>\n"
        b"List-Id: <blinux-list.redhat.com>\nSubject: Re: Orca\n\nThanks, solved.\n"
    )
    assert mail.from_addr == "elias@example.se"
    assert mail.list_address == "blinux-list@redhat.com"
