"""The mail tokenizer: Unicode words, encoded words, HTML, headers, and what it leaves out."""

from __future__ import annotations

import pytest

from maildesk.core.parse import parse_mail
from maildesk.spam.tokenize import script_of, strip_list_footer, tokenize


def raw_mail(
    body: bytes,
    *,
    subject: bytes = b"Hello",
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: bytes = b"",
    sender: bytes = b"Ann <ann@example.org>",
) -> bytes:
    return (
        b"From: " + sender + b"\n"
        b"To: support@example.com\n"
        b"Subject: " + subject + b"\n"
        b"Date: Mon, 02 Sep 2024 10:00:00 +0000\n"
        b"Message-ID: <1@example.org>\n"
        b"MIME-Version: 1.0\n" + extra + b"Content-Type: " + content_type + b"\n\n" + body
    )


def tokens_of(raw: bytes) -> list[str]:
    return tokenize(parse_mail(raw))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # UTF-8 Cyrillic body, RFC 2047 base64 subject
            raw_mail(
                "Прошу выставить счёт за оплату".encode(),
                subject=b"=?UTF-8?B?0KHRh9GR0YIg0L3QsCDQvtC/0LvQsNGC0YM=?=",
            ),
            {"прошу", "выставить", "счёт", "оплату", "s:счёт", "s:оплату"},
        ),
        (  # unlabelled-in-header windows-1251 body
            raw_mail(
                "Срочно нужна помощь с заказом".encode("windows-1251"),
                content_type=b"text/plain; charset=windows-1251",
            ),
            {"срочно", "нужна", "помощь", "заказом", "charset:windows-1251"},
        ),
        (  # koi8-r, quoted-printable encoded word in the subject
            raw_mail(
                "Добрый день".encode("koi8-r"),
                subject=b"=?koi8-r?Q?=F3=DE=C5=D4?=",
                content_type=b"text/plain; charset=koi8-r",
            ),
            {"добрый", "день", "s:счет", "charset:koi8-r"},
        ),
        (  # Latin-1 Q-encoded subject with accents
            raw_mail(b"Merci", subject=b"=?ISO-8859-1?Q?pr=E9parer_l'=E9t=E9?="),
            {"s:préparer", "s:l'été", "merci"},
        ),
        (  # CJK text has no spaces: character bigrams
            raw_mail("你好我公司可代开发票".encode()),
            {"你好", "公司", "发票"},
        ),
    ],
    ids=["utf8-cyrillic", "windows-1251", "koi8-r", "latin1-subject", "cjk"],
)
def test_words_in_any_script(raw: bytes, expected: set[str]) -> None:
    assert expected <= set(tokens_of(raw))


def test_html_only_mail() -> None:
    html = (
        b"<html><body><p>Cheap <b>watches</b> here: "
        b'<a href="http://shop.cheap-watches.example.ru/buy?x=1">buy</a>'
        b'<font size=1>x</font><div style="display:none">hidden words</div>'
        b'<img src="http://203.0.113.9/p.gif"></p></body></html>'
    )
    tokens = set(tokens_of(raw_mail(html, content_type=b"text/html; charset=utf-8")))
    assert {"html:only", "html:<font", "html:hidden-text", "cheap", "watches"} <= tokens
    assert {"url:cheap-watches.example.ru", "url:example.ru", "url:tld:ru", "url:ip"} <= tokens
    assert "ct:text/html" not in tokens  # html:only already says it
    assert not any(t.startswith("<") or t == "href" for t in tokens)  # markup is not words


def test_multipart_alternative_is_not_html_only() -> None:
    body = (
        b"--b\nContent-Type: text/plain\n\nplain words\n"
        b"--b\nContent-Type: text/html\n\n<p>plain words</p>\n--b--\n"
    )
    tokens = tokens_of(raw_mail(body, content_type=b'multipart/alternative; boundary="b"'))
    assert "html:only" not in tokens and "ct:multipart/alternative" in tokens


def test_header_clues() -> None:
    raw = raw_mail(
        b"see https://www.example.com/x and mail bob@sales.example.net",
        sender=b"billing@pay-pal.example.co",
        extra=b"Reply-To: collect@elsewhere.example\nX-Mailer: Microsoft Outlook Express 6.00\n",
    )
    tokens = set(tokens_of(raw))
    assert {"from:pay-pal.example.co", "from:tld:co", "from:no-name"} <= tokens
    assert {"hdr:reply-to-elsewhere", "replyto:elsewhere.example", "mailer:microsoft"} <= tokens
    assert {"url:www.example.com", "email:sales.example.net", "email:example.net"} <= tokens
    assert not {"https", "www", "www.example.com"} & tokens  # a URL gives host tokens only


def test_attachments() -> None:
    body = (
        b"--b\nContent-Type: text/plain\n\nsee attached\n"
        b'--b\nContent-Type: application/zip; name="Payment Invoice.zip"\n'
        b'Content-Disposition: attachment; filename="Payment Invoice.zip"\n'
        b"Content-Transfer-Encoding: base64\n\nUEsDBA==\n--b--\n"
    )
    tokens = set(tokens_of(raw_mail(body, content_type=b'multipart/mixed; boundary="b"')))
    assert {"att:type:application/zip", "att:ext:zip", "ct:multipart/mixed"} <= tokens


def test_collection_artefacts_are_left_out() -> None:
    """Date, Received, list headers and the corpus' address rewriting give no tokens."""
    extra = (
        b"Received: from zorblaxhost.example (zorblaxhost [10.0.0.1]) by qwertmx\n"
        b"List-Id: Frobnicator users <frobusers.lists.example>\n"
        b"X-Beenthere: frobusers@lists.example\n"
        b"Precedence: bulk\n"
        b"X-Spam-Status: No, hits=-5.0 tests=GLORPTEST\n"
    )
    body = (
        b"Real content about the parser.\n"
        b"Write to zzzz@spamassassin.taint.org please.\n"
        b"_______________________________________________\n"
        b"Frobusers mailing list\n"
        b"Frobusers@lists.example\n"
        b"https://lists.example/mailman/listinfo/frobusers\n"
    )
    raw = raw_mail(body, subject=b"[Frobusers] Re: parser question", extra=extra)
    tokens = tokens_of(raw)
    joined = " ".join(tokens)
    for absent in ("zorblax", "qwertmx", "frobusers", "glorptest", "bulk", "2024", "taint"):
        assert absent not in joined, absent
    assert {"s:parser", "s:question", "real", "content", "parser"} <= set(tokens)
    assert "listinfo" not in tokens and "mailing" not in tokens


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("body\n-- \nAnn Smith\nAcme support\n", True),  # a signature stays
        ("body\n-- \nIrish Linux Users' Group: ilug@linux.ie\nList maintainer: x\n", False),
        ("body\n------------------------ Yahoo! Groups Sponsor ---------\nads\n", False),
        ("body\n" + "-" * 20 + "\nunsubscribe here for our mailing list offers\n" * 200, True),
    ],
    ids=["signature", "ilug", "yahoo", "too-long-to-be-a-footer"],
)
def test_list_footer(text: str, kept: bool) -> None:
    stripped = strip_list_footer(text)
    assert (stripped == text) is kept
    assert stripped.startswith("body")


def test_long_runs_and_money() -> None:
    tokens = set(tokens_of(raw_mail(b"Only $29.99! " + b"a" * 45 + b" now, 100% free.")))
    assert {"$29.99", "skip:a:40", "100%", "free", "now"} <= tokens
    assert "free." not in tokens  # trailing punctuation is not part of a word


def test_tokens_are_unique_and_stable() -> None:
    raw = raw_mail(b"spam spam spam eggs eggs", subject=b"spam")
    first, second = tokens_of(raw), tokens_of(raw)
    assert first == second and len(first) == len(set(first))
    assert first.count("spam") == 1


def test_empty_and_missing_parts() -> None:
    tokens = set(tokens_of(b"Subject:\n\n"))
    assert {"from:none", "s:empty", "hdr:no-valid-date", "hdr:no-message-id"} <= tokens


@pytest.mark.parametrize(
    ("body", "marks"),
    [
        (b"Please send the invoice for November", {"script:latin"}),
        ("Не приходит счёт за ноябрь".encode(), {"script:cyrillic"}),
        ("Invoice 42: не приходит счёт за ноябрь, thanks a lot".encode(), {"script:cyrillic"}),
        ("Ok, спасибо".encode(), set()),  # fewer than three words of any script
    ],
    ids=["english", "russian", "mixed", "too-short"],
)
def test_script_markers(body: bytes, marks: set[str]) -> None:
    """One marker per script with at least three words (subject "Hi" has none)."""
    found = {t for t in tokens_of(raw_mail(body, subject=b"Hi")) if t.startswith("script:")}
    assert found == marks | ({"script:latin"} if body.startswith(b"Invoice") else set())


@pytest.mark.parametrize(
    ("token", "script"),
    [
        ("hello", "latin"),
        ("s:café", "latin"),
        ("s:счёт", "cyrillic"),
        ("skip:п:20", "cyrillic"),
        ("发票", "cjk"),
        ("$85", "common"),
        ("100%", "common"),
        ("from:tld:ru", None),
        ("url:ip", None),
    ],
)
def test_script_of(token: str, script: str | None) -> None:
    assert script_of(token) == script
