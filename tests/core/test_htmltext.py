"""HTML -> text: what a reader sees, one line per block; never raises, never reaches out."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.core import parse
from maildesk.core.htmltext import html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>one</p><p>two</p>", "one\ntwo"),
        ("<div>a<br>b<br/>c</div>", "a\nb\nc"),
        ("<ul><li>x</li><li>y</li></ul>", "x\ny"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "ab\nc"),
        ("<h1>Title</h1><h4>Sub</h4><blockquote>quoted</blockquote>", "Title\nSub\nquoted"),
        ("<b>Ch</b>eap <i>watch</i>es", "Cheap watches"),  # inline tags join as written
        ("<p>a</p>b", "ab"),  # a block starts a line; its end does not
        (
            "<html><head><title>T</title><style>p {color: red}</style></head>"
            "<body>x<script>alert('y')</script>y<!-- a comment -->z<?pi x?></body></html>",
            "xyz",
        ),
        ("&lt;b&gt; &amp; &eacute;t&eacute; &#1055;&#x440;&#x438;", "<b> & été При"),
        ("a&nbsp;&nbsp;b", "a b"),
        ("  a \n\n\t b \t c  \r\n", "a\nb c"),
        ('<div style="display:none">hidden words</div>', "hidden words"),  # the tokenizer marks it
        ("plain words, no markup", "plain words, no markup"),
        ("<p>Привет, <b>мир</b></p>", "Привет, мир"),
    ],
    ids=[
        "paragraphs", "br", "li", "tr", "headings-blockquote", "inline", "block-start-only",
        "silent-parts", "entities", "nbsp", "whitespace", "hidden-text", "no-markup", "cyrillic",
    ],
)
def test_documented_behaviour(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        (  # parse joins a mail's HTML parts with a newline: each is a whole document
            "<html><body><p>one</p></body></html>\n"
            "<html><head><title>T</title></head><body><p>two</p></body></HTML >",
            "one\ntwo",
        ),
        ("<html><body>message</body></html>\n-- list footer --\n", "message\n-- list footer --"),
        ("<html><head><title>T</title><body><p>body text</p>", "body text"),  # head never closed
        (  # the str is decoded already: neither declaration re-decodes it
            '<?xml version="1.0" encoding="utf-8"?><meta charset="windows-1251"><p>Привет</p>',
            "Привет",
        ),
    ],
    ids=["two-documents", "after-html-end", "unclosed-head", "charset-declarations"],
)
def test_mail_shapes(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    "html",
    ["", "   \n ", "<!-- only a comment -->", "<!DOCTYPE html>", "<!DOCTYPE>", "</p></div>",
     "<html><head></head><body></body></html>", "<script>only()</script>"],
)
def test_documents_without_text(html: str) -> None:
    assert html_to_text(html) == ""


@pytest.mark.parametrize(
    ("html", "kept"),
    [
        ("a\x00b", ("a", "b")),
        ("x\udcffy", ("x", "y")),  # a lone surrogate cannot be UTF-8 encoded as is
        ("<![if !supportLists]>item<![endif]>", ("item",)),
        ("<p <p <p>>>text", ("text",)),
        ("<a href='x>y'>link</a> after", ("link", "after")),
        ("\x01\x02<p>\x0bctl</p>", ("ctl",)),
    ],
    ids=["nul", "surrogate", "msoffice-conditional", "nested-brackets", "open-quote", "controls"],
)
def test_broken_markup_keeps_its_text(html: str, kept: tuple[str, ...]) -> None:
    text = html_to_text(html)
    assert "\x00" not in text
    assert all(word in text for word in kept)


def test_nesting_past_libxml2s_depth_limit_keeps_the_text() -> None:
    # libxml2 stops building at 256 levels and drops the rest: a spammer's way to hide words
    html = "<div>" * 5_000 + "deep words" + "</div>" * 5_000 + "<p>after</p>"
    assert html_to_text(html) == "deep words\nafter"


def test_text_past_libxml2s_size_limit_is_kept() -> None:
    words = "word " * 2_200_000  # one text node over libxml2's 10 MB limit
    assert html_to_text(f"<p>{words}</p><p>end</p>") == words.strip() + "\nend"


def test_declared_entities_are_not_expanded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT")
    html = (
        f'<!DOCTYPE html [<!ENTITY file SYSTEM "{secret.as_uri()}">'
        '<!ENTITY lol "lollollollollollollollollollol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<p>a &file; b &lol2; c</p>"
    )
    text = html_to_text(html)
    assert "SECRET-CONTENT" not in text
    assert "lollol" not in text
    assert "a &file; b &lol2; c" in text


def test_no_network_for_external_dtds_or_entities() -> None:
    # libxml2's HTML parser loads no DTD even when allowed the network; no_network=True
    # keeps it so should that change: this holds the library to it.
    connections: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]

        def accept() -> None:
            with contextlib.suppress(TimeoutError):
                connection, address = server.accept()
                connection.close()
                connections.append(address)

        listener = threading.Thread(target=accept)
        listener.start()
        url = f"http://127.0.0.1:{port}/x.dtd"
        html = (
            f'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "{url}">'
            f'<!DOCTYPE x [<!ENTITY remote SYSTEM "{url}">]><p>text &remote;</p>'
        )
        assert html_to_text(html).endswith("text &remote;")
        listener.join()
    assert connections == []


def test_parse_re_exports_the_converter() -> None:
    assert parse.html_to_text is html_to_text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=list("<>/!-&#;=\"' \n\x00apbdivhtmlscrt")) | st.text())
def test_never_raises(html: str) -> None:
    text = html_to_text(html)
    assert text == text.strip()
    assert "\n\n" not in text
