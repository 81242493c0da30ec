"""Build outbound RFC 5322 messages from rendered templates (pure).

Header values pass through email.headerregistry, which refuses CR/LF, so no
customer-controlled text can inject a header (DESIGN invariant 5).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import encoders
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from typing import Any

from maildesk.core.address import ascii_domain
from maildesk.core.render import RenderedMail


@dataclass(frozen=True)
class OutgoingMail:
    message_id: str  # without angle brackets
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class InlineImage:
    """An image the HTML part shows as <img src="cid:{content_id}">."""

    content_id: str  # without angle brackets, e.g. chart.2026-11@example.com
    filename: str  # ASCII, for clients that save it
    payload: bytes
    subtype: str = "png"


# CR, LF, NUL or any whitespace (re's \s is str.isspace); in a Message-ID also < and >.
_UNSAFE = re.compile(r"[\r\n\x00\s]")
_UNSAFE_ID = re.compile(r"[\r\n\x00\s<>]")


def _address(addr: str, name: str = "") -> str:
    """One address for a header; refuses anything that could break out of the header.
    Its domain goes in ASCII (IDNA); a non-ASCII local part stays UTF-8, the one thing
    in a header here that is not ASCII (RFC 6532; the relay is asked for SMTPUTF8)."""
    local, at, domain = addr.partition("@")
    if not at or not local or not domain or _UNSAFE.search(addr):
        raise ValueError(f"not a safe address: {addr!r}")
    addr = ascii_domain(addr)
    name = " ".join(name.split())
    if not name:
        return addr
    if name.isascii() and addr.isascii():
        return email.utils.formataddr((name, addr))
    return f"{Header(name, 'utf-8', header_name='From').encode()} <{addr}>"


def _header_text(value: str, name: str) -> str:
    """One line (CR/LF folded away); RFC 2047-encoded when not ASCII."""
    value = " ".join(value.split())
    return value if value.isascii() else Header(value, "utf-8", header_name=name).encode()


def new_message_id(domain: str) -> str:
    return email.utils.make_msgid(idstring="maildesk", domain=domain).strip("<>")


def compose(
    *,
    from_addr: str,
    from_name: str,
    to: Sequence[str],
    subject: str,
    body: RenderedMail,
    now: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    reply_to: str | None = None,
    automatic: bool = True,
    message_id: str | None = None,
    cc: Sequence[str] = (),
    attachments: Sequence[tuple[str, str, bytes]] = (),  # (filename, content type, bytes)
    inline: Sequence[InlineImage] = (),
    auto_submitted: str = "auto-replied",
) -> OutgoingMail:
    """A multipart/alternative (text + HTML) mail, UTF-8; multipart/mixed with attachments.

    Inline images (the HTML shows them as `<img src="cid:...">`) make the HTML a
    multipart/related of the HTML and the images, inside the alternative. An automatic
    mail says Auto-Submitted: auto-replied (an answer to a mail), or what `auto_submitted`
    says (auto-generated: a report nobody asked for by mail, RFC 3834).

    Built with the compat32 classes: the `email.policy.default` header machinery
    costs several milliseconds per mail, and every value here is already checked.
    """
    domain = from_addr.partition("@")[2] or "localhost"
    msg_id = message_id or new_message_id(domain)
    headers = [("From", _address(from_addr, from_name)), ("To", ", ".join(_address(a) for a in to))]
    if cc:
        headers.append(("Cc", ", ".join(_address(a) for a in cc)))
    headers += [
        ("Subject", _header_text(subject, "Subject")),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", f"<{_checked_id(msg_id)}>"),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", f"<{_checked_id(in_reply_to)}>"))
    refs = [r for r in dict.fromkeys([*references, *([in_reply_to] if in_reply_to else [])]) if r]
    if refs:
        headers.append(("References", " ".join(f"<{_checked_id(r)}>" for r in refs[-20:])))
    if reply_to:
        headers.append(("Reply-To", _address(reply_to, from_name)))
    if automatic:
        headers.append(("Auto-Submitted", auto_submitted))  # RFC 3834
        headers.append(("X-Auto-Response-Suppress", "All"))  # Exchange: do not answer with OOF
    raw = None if attachments or inline else _flat_alternative(headers, body)
    if raw is None:
        msg = _mime_tree(body, attachments, inline)
        for name, value in headers:
            msg[name] = value
        raw = msg.as_bytes(policy=_SMTP_COMPAT)
    return OutgoingMail(
        message_id=msg_id, mail_from=from_addr, recipients=(*to, *cc), raw=raw
    )


def _mime_tree(
    body: RenderedMail,
    attachments: Sequence[tuple[str, str, bytes]],
    inline: Sequence[InlineImage],
) -> MIMEMultipart:
    """The parts, without headers: text + HTML alternatives (the HTML with its inline
    images as a multipart/related), inside a multipart/mixed when files go with it."""
    body_part = _multipart("alternative")
    body_part.attach(_text_part(body.text, "plain"))
    html_part: Message = _text_part(body.html, "html")
    if inline:
        html_part = _multipart("related")
        html_part.attach(_text_part(body.html, "html"))
        for image in inline:
            html_part.attach(_inline_image(image))
    body_part.attach(html_part)
    if not attachments:
        return body_part
    msg = _multipart("mixed")
    msg.attach(body_part)
    for filename, content_type, payload in attachments:
        msg.attach(_attachment(filename, content_type, payload))
    return msg


class _SmtpCompat32(email.policy.Compat32):
    """compat32 with CRLF line ends. A one-line ASCII header that fits in a line is
    written as it is: what the Header folding makes of it, without its cost."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and _fits(name, value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        if isinstance(value, str) and name in _ADDRESS_HEADERS and not value.isascii():
            # A UTF-8 local part (names are encoded words by now): RFC 6532, as it is,
            # never as an encoded word, which no reader takes for an address.
            return f"{name}: {value.replace(', ', f',{self.linesep} ')}{self.linesep}".encode()
        folded: bytes = super().fold_binary(name, value)
        return folded


_ADDRESS_HEADERS = frozenset({"From", "To", "Cc", "Reply-To"})


_SMTP_COMPAT = _SmtpCompat32(linesep="\r\n", max_line_length=78)


def _fits(name: str, value: str) -> bool:
    """A header compat32 writes as it is: ASCII, one line, within 78 characters."""
    return (value.isascii() and len(name) + 2 + len(value) <= 78
            and "\r" not in value and "\n" not in value)


def _folded(name: str, value: str) -> str | None:
    """The header line(s) compat32 writes for `value`, when it keeps them as they are:
    one line that fits, or what Header.encode folded (RFC 2047 words, each continuation
    line starting with one space) with every line within 78 characters. None: the
    generator decides (it would fold it again)."""
    if _fits(name, value):
        return f"{name}: {value}\r\n"
    first, *rest = value.split("\n")
    if (not rest or not _fits(name, first) or "\r" in value or not value.isascii()
            or not all(line[:1] == " " and line[1:2] not in (" ", "") and len(line) <= 78
                       and not line.endswith(" ") for line in rest)):
        return None
    return f"{name}: " + value.replace("\n", "\r\n") + "\r\n"


def _boundary() -> str:
    """A multipart boundary short enough that its Content-Type fits one line. Every part
    below it is base64 (no line can start with "--"), so the generator need not search
    the parts for it (a regex compiled per boundary)."""
    return f"=_{random.randrange(sys.maxsize):019d}_="


def _multipart(subtype: str) -> MIMEMultipart:
    return MIMEMultipart(subtype, boundary=_boundary())


def _flat_alternative(headers: Sequence[tuple[str, str]], body: RenderedMail) -> bytes | None:
    """The bytes the generator writes for `_mime_tree(body)` with these headers, written
    directly (the generator is most of the cost of a confirmation); None when a header
    needs folding, which is left to the generator. tests/core/test_text_parts.py holds
    the two byte for byte equal."""
    lines = [_folded(name, value) for name, value in headers]
    if None in lines:
        return None
    boundary = _boundary()
    head = "".join(line for line in lines if line is not None)
    parts = (_flat_text(body.text, "plain"), _flat_text(body.html, "html"))
    return (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
        f"{head}\r\n--{boundary}\r\n{parts[0]}\r\n--{boundary}\r\n{parts[1]}"
        f"\r\n--{boundary}--\r\n"
    ).encode("ascii")


def _flat_text(text: str, subtype: str) -> str:
    """`_text_part(text, subtype)` as the generator writes it, CRLF line ends."""
    head = "".join(f"{name}: {value}\r\n" for name, value in _text_headers(subtype))
    return f"{head}\r\n" + _base64(text).replace("\n", "\r\n")


def _text_part(text: str, subtype: str) -> Message:
    """What MIMEText(text, subtype, "utf-8") makes, byte for byte, without its header
    parameter parsing: UTF-8, base64 (quoted-printable is pure Python, slow)."""
    part = Message()
    for name, value in _text_headers(subtype):
        part[name] = value
    part.set_payload(_base64(text))
    return part


def _text_headers(subtype: str) -> tuple[tuple[str, str], ...]:
    """A text part's headers, in MIMEText's order: both ways of writing a part use them."""
    return (
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("MIME-Version", "1.0"),
        ("Content-Transfer-Encoding", "base64"),
    )


def _base64(text: str) -> str:
    return base64.encodebytes(text.encode("utf-8")).decode("ascii")


def _attachment(filename: str, content_type: str, payload: bytes) -> MIMEBase:
    """The customer's or staff's file, byte for byte (base64); the name is only a name."""
    maintype, _, subtype = content_type.partition("/")
    if not maintype or not subtype or _UNSAFE.search(content_type):
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype)
    part.set_payload(payload)
    encoders.encode_base64(part)
    name = " ".join(filename.split()) or "attachment"
    encoded: str | tuple[str, str, str] = name if name.isascii() else ("utf-8", "", name)
    part.add_header("Content-Disposition", "attachment", filename=encoded)
    return part


def _inline_image(image: InlineImage) -> MIMEImage:
    part = MIMEImage(image.payload, image.subtype)  # base64
    part["Content-ID"] = f"<{_checked_id(image.content_id)}>"
    part.add_header("Content-Disposition", "inline", filename=image.filename)
    return part


def _checked_id(value: str) -> str:
    if not value or _UNSAFE_ID.search(value):
        raise ValueError(f"not a safe Message-ID: {value!r}")
    return value
