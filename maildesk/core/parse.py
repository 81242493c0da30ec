"""Raw RFC 5322 bytes -> InboundMail: pure data, never raises for malformed content.

The MIME walk is in maildesk.core.mimeparts (mail-parser for attachments), text
decoding in maildesk.core.mimetext and Message-IDs in maildesk.core.msgid; this
module reads the headers a ticketing system needs (addresses on the undecoded
header, ids, dates, list headers) and bounds the size of the structure.
Only bounds violations raise (MalformedMail); everything else degrades to
"what could be decoded" plus a defect note.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.utils
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import mailparser

from maildesk.core.address import parse_addresses
from maildesk.core.htmltext import html_to_text as html_to_text  # re-exported
from maildesk.core.language import guess_language
from maildesk.core.mimeparts import (
    Attachment,
    DeliveryReport,
    attached_mails,
    attachments_of,
    bodies,
    delivery_report,
    mime_view,
    needs_mail_parser,
    stdlib_defects,
)
from maildesk.core.mimetext import decode_header_value, fix_surrogates
from maildesk.core.msgid import message_ids, normalise_message_id
from maildesk.core.tid import clean_subject
from maildesk.errors import MalformedMail

# Bounds on one mail's structure. The SMTP size limit bounds the bytes; these
# bound the work (Python's email package is superlinear on some shapes).
MAX_HEADER_LINES = 2_000
MAX_HEADER_BYTES = 256 * 1024
MAX_MIME_DEPTH = 20
MAX_MIME_PARTS = 500

@dataclass(frozen=True)
class InboundMail:
    message_id: str | None  # without angle brackets
    subject: str
    from_addr: str  # lowercased addr-spec, "" when absent or unparseable
    from_name: str
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str  # the best plain-text rendering of the body
    html: str | None
    attachments: tuple[Attachment, ...]
    content_type: str
    content_hash: str  # sha256 hex of the raw bytes
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # (lowercase name, decoded value)
    defects: tuple[str, ...] = ()
    report: DeliveryReport | None = None
    # Header values that were not used (an unusable address, a Message-ID with a
    # control character): the rest of the mail is processed, these say why.
    dropped: tuple[str, ...] = ()
    # The distribution list this mail came through (List-Post), never a participant.
    list_address: str | None = None
    # Mails forwarded as attachments (message/rfc822), raw: a staff #new-for reads them.
    attached_mails: tuple[bytes, ...] = field(default=(), repr=False)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def dedupe_key(self) -> str:
        """Message-ID when present, else the content hash (invariant 2)."""
        return f"mid:{self.message_id}" if self.message_id else f"sha256:{self.content_hash}"

    # Worked out once, on first use, and kept with the mail: the parse workers fill them
    # in (maildesk.work.parsepool.read_mail), so the pipeline process does not spend
    # its time on them.

    @cached_property
    def written_in(self) -> str | None:
        """'en' or 'ru' when the subject and text are clearly one of them, else None."""
        return guess_language(f"{self.subject}\n{self.text}")

    @cached_property
    def body_hash(self) -> str | None:
        """The same mail again from the same sender (an autoresponder, a loop) counts as
        one: subject without prefixes and TID, text, attachments. None when no text."""
        text = " ".join(self.text.lower().split())
        if not text:
            return None
        digest = hashlib.sha256()
        for part in (clean_subject(self.subject).lower(), text):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
        for att in self.attachments:
            digest.update(hashlib.sha256(att.payload).digest())
        return digest.hexdigest()


def parse_mail(raw: bytes) -> InboundMail:
    """Parse raw bytes. Raises MalformedMail only when the mail exceeds the bounds."""
    _check_header_bounds(raw)
    content_hash = hashlib.sha256(raw).hexdigest()
    defects: list[str] = []
    message, parsed = _read_mime(raw, defects)
    headers = tuple((k.lower(), decode_header_value(v)) for k, v in message.items())
    dropped: list[str] = []
    from_name, from_addr, list_address = _author(message, dropped)
    text, html, attachments = _bodies_and_attachments(message, parsed, defects)

    return InboundMail(
        message_id=_message_id(message.get("message-id"), dropped),
        subject=_no_nul(_one_line(decode_header_value(message.get("subject", "")))),
        from_addr=from_addr,
        from_name=from_name,
        reply_to=tuple(address for _, address in _addresses("Reply-To", message, dropped)),
        to=_address_specs("To", message, dropped),
        cc=_address_specs("Cc", message, dropped),
        date=_date(message.get("date")),
        in_reply_to=tuple(_id_list("In-Reply-To", message, dropped)),
        references=tuple(_id_list("References", message, dropped)),
        text=_no_nul(text),
        html=_no_nul(html) if html is not None else None,
        attachments=tuple(attachments),
        content_type=message.get_content_type(),
        content_hash=content_hash,
        headers=headers,
        defects=tuple(defects),
        report=delivery_report(message),
        dropped=tuple(dropped),
        list_address=list_address,
        attached_mails=attached_mails(message),
    )


def _read_mime(
    raw: bytes, defects: list[str]
) -> tuple[email.message.Message, mailparser.MailParser | None]:
    """The stdlib's message, its structure within the bounds, and mail-parser's view of
    it when its MIME tree needs one (for the attachments); their defects go to `defects`."""
    parsed: mailparser.MailParser | None = None
    message: email.message.Message = email.message_from_bytes(raw)
    _check_structure_bounds(message)
    if needs_mail_parser(message):
        try:
            parsed = mailparser.MailParser(mime_view(message))  # the MIME walk of attachments
        except Exception as exc:  # mail-parser gave up: keep the stdlib's view, keep going
            defects.append(f"mail-parser failed: {type(exc).__name__}: {exc}")
            message = email.message_from_bytes(raw)
    else:
        defects.extend(stdlib_defects(message))
    return message, parsed


def _author(message: email.message.Message, dropped: list[str]) -> tuple[str, str, str | None]:
    """(From name, From address, the list the mail came through, if any)."""
    from_name, from_addr = _first_address(_addresses("From", message, dropped))
    list_address = _list_address(message)
    if list_address and from_addr == list_address:
        # A list rewrote From (DMARC, "Ann via Users"): the author is in X-Original-From
        # or Reply-To; the list itself is never the sender of a ticket.
        from_name, from_addr = _list_author(message, list_address, dropped)
    return from_name, from_addr, list_address


def _bodies_and_attachments(
    message: email.message.Message,
    parsed: mailparser.MailParser | None,
    defects: list[str],
) -> tuple[str, str | None, list[Attachment]]:
    """(plain text, HTML or None, attachments); mail-parser's defects go to `defects`."""
    # Bodies are decoded here, not by mail-parser: it falls back to UTF-8 with errors
    # ignored when a charset is missing or unknown, which silently drops Russian text.
    text_parts, html_parts = bodies(message)
    attachments: list[Attachment] = []
    if parsed is not None:
        if not text_parts and not html_parts:  # e.g. text recovered from a broken epilogue
            text_parts = [t for t in parsed.text_plain if t.strip()]
            html_parts = [h for h in parsed.text_html if h.strip()]
        attachments = attachments_of(parsed.attachments)
        defects.extend(sorted(parsed.defects_categories))
    html = "\n".join(html_parts) if html_parts else None
    text = "\n\n".join(text_parts) if text_parts else (html_to_text(html) if html else "")
    return text, html, attachments


def _list_address(message: email.message.Message) -> str | None:
    """The posting address of the list a mail came through (RFC 2369 List-Post)."""
    value = message.get("list-post")
    if value is None:
        return None
    found = re.search(r"<mailto:([^>?\s]+)", str(value), re.IGNORECASE)
    if not found:
        return None
    parsed = parse_addresses("List-Post", [found.group(1)])
    return parsed.addresses[0][1] if parsed.addresses else None


def _list_author(
    message: email.message.Message, list_address: str, dropped: list[str]
) -> tuple[str, str]:
    for header in ("X-Original-From", "Reply-To"):
        found = [a for a in _addresses(header, message, []) if a[1] != list_address]
        if found:
            dropped.append(f"From: the list address {list_address}; author from {header}")
            return found[0]
    dropped.append(f"From: the list address {list_address}; no header names the author")
    return "", ""


def _no_nul(text: str) -> str:
    """NUL has no place in text (PostgreSQL refuses it): shown as U+FFFD instead."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _message_id(value: object, dropped: list[str]) -> str | None:
    found = normalise_message_id(value)
    if found is not None and _has_control(found):
        dropped.append("Message-ID: has a control character; deduplicated by content instead")
        return None
    return found


def _id_list(header: str, message: email.message.Message, dropped: list[str]) -> list[str]:
    ids: list[str] = []
    for value in message.get_all(header.lower(), []):
        for found in message_ids(str(value)):
            if _has_control(found) or len(found) > 500:
                dropped.append(f"{header}: an entry with a control character or over 500 chars")
            else:
                ids.append(found)
    return ids


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _addresses(
    header: str, message: email.message.Message, dropped: list[str], *, names: bool = True
) -> tuple[tuple[str, str], ...]:
    """(display name, address) pairs, parsed on the undecoded header (see maildesk.core.address).
    The raw values: compat32 would hand 8-bit ones (RFC 6532 UTF-8) over as a Header
    whose text has lost its bytes."""
    wanted = header.lower()
    values = [value for name, value in message.raw_items() if name.lower() == wanted]
    parsed = parse_addresses(header, values, fix_surrogates if names else None, names=names)
    dropped.extend(parsed.problems)
    return parsed.addresses


def _address_specs(
    header: str, message: email.message.Message, dropped: list[str]
) -> tuple[str, ...]:
    """A recipient list (To, Cc): the addresses alone, their display names never decoded
    (and a plain list read by the faster parser, see maildesk.core.address)."""
    return tuple(address for _, address in _addresses(header, message, dropped, names=False))


def _first_address(found: Sequence[tuple[str, str]]) -> tuple[str, str]:
    return found[0] if found else ("", "")


def _date(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _check_header_bounds(raw: bytes) -> None:
    end = raw.find(b"\n\n")
    crlf_end = raw.find(b"\r\n\r\n")
    if end < 0 or (0 <= crlf_end < end):
        end = crlf_end
    head = raw if end < 0 else raw[:end]
    if len(head) > MAX_HEADER_BYTES:
        raise MalformedMail(f"header section is {len(head)} bytes (limit {MAX_HEADER_BYTES})")
    lines = head.count(b"\n")
    if lines > MAX_HEADER_LINES:
        raise MalformedMail(f"header section has {lines} lines (limit {MAX_HEADER_LINES})")


def _check_structure_bounds(message: email.message.Message) -> None:
    count = 0
    stack: list[tuple[email.message.Message, int]] = [(message, 1)]
    while stack:
        part, depth = stack.pop()
        count += 1
        if depth > MAX_MIME_DEPTH:
            raise MalformedMail(f"MIME nesting deeper than {MAX_MIME_DEPTH}")
        if count > MAX_MIME_PARTS:
            raise MalformedMail(f"more than {MAX_MIME_PARTS} MIME parts")
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, email.message.Message))
