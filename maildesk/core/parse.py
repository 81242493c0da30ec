"""Raw RFC 5322 bytes -> InboundMail: pure data, never raises for malformed content.

mail-parser does the MIME walk (bodies, attachments, defects); this module adds
what a ticketing system needs on top: normalised addresses and Message-IDs,
robust header decoding (unknown charsets, windows-1251/koi8-r without labels),
delivery-status reports, and hard bounds on the size of the structure.
Only bounds violations raise (MalformedMail); everything else degrades to
"what could be decoded" plus a defect note.
"""

from __future__ import annotations

import base64
import copy
import email
import email.header
import email.message
import email.utils
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import mailparser

from maildesk.core.address import parse_addresses
from maildesk.core.htmltext import html_to_text as html_to_text  # re-exported
from maildesk.errors import MalformedMail

logging.getLogger("mailparser").setLevel(logging.CRITICAL)  # defects are reported by us

# Bounds on one mail's structure. The SMTP size limit bounds the bytes; these
# bound the work (Python's email package is superlinear on some shapes).
MAX_HEADER_LINES = 2_000
MAX_HEADER_BYTES = 256 * 1024
MAX_MIME_DEPTH = 20
MAX_MIME_PARTS = 500

_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_BARE_ID_RE = re.compile(r"[^\s<>()\"@,;]+@[^\s<>()\"@,;]+")
# Labels whose real-world content is a superset of what they name.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-1": "windows-1252",
    "us-ascii": "windows-1252",
}


@dataclass(frozen=True)
class Attachment:
    filename: str  # display name only; never used as a path
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class DeliveryReport:
    """What a bounce (RFC 3464 multipart/report) says."""

    original_message_id: str | None
    failed_recipients: tuple[str, ...]
    permanent: bool  # any recipient with Action: failed / Status 5.x.x


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


def parse_mail(raw: bytes) -> InboundMail:
    """Parse raw bytes. Raises MalformedMail only when the mail exceeds the bounds."""
    _check_header_bounds(raw)
    content_hash = hashlib.sha256(raw).hexdigest()
    defects: list[str] = []
    parsed: mailparser.MailParser | None = None
    message: email.message.Message = email.message_from_bytes(raw)
    _check_structure_bounds(message)
    if _needs_mail_parser(message):
        try:
            parsed = mailparser.MailParser(_mime_view(message))  # the MIME walk of attachments
        except Exception as exc:  # mail-parser gave up: keep the stdlib's view, keep going
            defects.append(f"mail-parser failed: {type(exc).__name__}: {exc}")
            message = email.message_from_bytes(raw)
    else:
        defects.extend(_stdlib_defects(message))

    headers = tuple((k.lower(), decode_header_value(v)) for k, v in message.items())
    dropped: list[str] = []
    from_name, from_addr = _first_address(_addresses("From", message, dropped))
    list_address = _list_address(message)
    if list_address and from_addr == list_address:
        # A list rewrote From (DMARC, "Ann via Users"): the author is in X-Original-From
        # or Reply-To; the list itself is never the sender of a ticket.
        from_name, from_addr = _list_author(message, list_address, dropped)
    # Bodies are decoded here, not by mail-parser: it falls back to UTF-8 with errors
    # ignored when a charset is missing or unknown, which silently drops Russian text.
    text_parts, html_parts = _bodies(message)
    attachments: list[Attachment] = []
    if parsed is not None:
        if not text_parts and not html_parts:  # e.g. text recovered from a broken epilogue
            text_parts = [t for t in parsed.text_plain if t.strip()]
            html_parts = [h for h in parsed.text_html if h.strip()]
        attachments = _attachments(parsed.attachments)
        defects.extend(sorted(parsed.defects_categories))
    html = "\n".join(html_parts) if html_parts else None
    text = "\n\n".join(text_parts) if text_parts else (html_to_text(html) if html else "")

    return InboundMail(
        message_id=_message_id(message.get("message-id"), dropped),
        subject=_no_nul(_one_line(decode_header_value(message.get("subject", "")))),
        from_addr=from_addr,
        from_name=from_name,
        reply_to=tuple(a for _, a in _addresses("Reply-To", message, dropped)),
        to=tuple(a for _, a in _addresses("To", message, dropped)),
        cc=tuple(a for _, a in _addresses("Cc", message, dropped)),
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
        report=_delivery_report(message),
        dropped=tuple(dropped),
        list_address=list_address,
        attached_mails=_attached_mails(message),
    )


def _attached_mails(message: email.message.Message, limit: int = 3) -> tuple[bytes, ...]:
    """message/rfc822 parts (not those of a delivery report: that is the bounced mail)."""
    if message.get_content_type() == "multipart/report":
        return ()
    found: list[bytes] = []
    for part in message.walk():
        if part.get_content_type() == "message/rfc822" and len(found) < limit:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                try:
                    found.append(inner[0].as_bytes())
                except Exception:  # an inner mail the generator cannot write: not used
                    continue
    return tuple(found)


def _needs_mail_parser(message: email.message.Message) -> bool:
    """Whether mail-parser has anything to add: attachments, or a body only it recovers.

    Its parse is thorough and eager (every Received line, address and date
    diagnostics: 2-5 ms a mail), and most mail is one or two inline text parts,
    for which the stdlib's tree and ``_bodies`` below give the same result.
    """
    bodies = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        if (
            part.get_content_type() not in ("text/plain", "text/html")
            or part.get_content_disposition() not in (None, "inline")
            or part.get_filename() is not None
        ):
            return True
        payload = part.get_payload()
        bodies += isinstance(payload, str) and bool(payload.strip())
    return bodies == 0


def _mime_view(message: email.message.Message) -> email.message.Message:
    """The root of ``message`` with only its MIME headers, for mail-parser.

    mail-parser reads Content-* headers in its MIME walk (attachments, bodies,
    structure defects) but first diagnoses every address, Date and Received
    header of the root, which maildesk reads itself: 2-3 ms of an attachment
    mail's parse, for defect notes that mail without attachments never had.
    The parts below the root are shared, not copied; ``message`` is not changed
    (``del`` gives the copy a header list of its own).
    """
    view = copy.copy(message)
    for name in {k.lower() for k in view}:
        if not name.startswith("content-"):
            del view[name]
    return view


def _stdlib_defects(message: email.message.Message) -> list[str]:
    """The defect classes the stdlib noted while parsing, as mail-parser names them."""
    return sorted({type(d).__name__ for part in message.walk() for d in part.defects})


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


def normalise_message_id(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    found = _MSGID_RE.search(text)
    if found:
        return found.group(1)
    text = text.strip("<> \t\r\n")
    return text if text and not any(c.isspace() for c in text) else None


def message_ids(value: str) -> Iterable[str]:
    """The ids in In-Reply-To/References; bare `id@host` too when none has brackets
    (some list software and old clients write them so; Thunderbird accepts them)."""
    text = str(value)
    found = _MSGID_RE.findall(text)
    if found:
        return found
    return [t.strip(".,;") for t in text.split() if _BARE_ID_RE.fullmatch(t.strip(".,;"))]


def decode_header_value(value: object) -> str:
    """Decode RFC 2047 words and stray 8-bit bytes; never raises, never loses text silently."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        chunks = email.header.decode_header(value)
    else:
        text = str(value)
        if "=?" not in text:
            return _fix_surrogates(text)
        try:
            chunks = email.header.decode_header(text)
        except Exception:
            return _fix_surrogates(text)
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(_fix_surrogates(chunk))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; unknown or wrong ones fall back, never raising."""
    if charset:
        try:
            return data.decode(_CHARSET_ALIASES.get(charset.lower(), charset))
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(guess_cyrillic(data), errors="replace")


def guess_cyrillic(data: bytes) -> str:
    """Pick windows-1251 or koi8-r for unlabelled 8-bit Russian text.

    In windows-1251 lowercase Cyrillic is 0xE0-0xFF; in koi8-r it is 0xC0-0xDF.
    Running Russian text is mostly lowercase, so the busier range wins.
    """
    high = [b for b in data if b >= 0xC0]
    if not high:
        return "latin-1"
    upper_range = sum(1 for b in high if b >= 0xE0)
    return "windows-1251" if upper_range * 2 >= len(high) else "koi8-r"


def _fix_surrogates(text: str) -> str:
    # The stdlib decodes 8-bit header bytes as surrogateescape; recover them.
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    return decode_bytes(data, None)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _addresses(
    header: str, message: email.message.Message, dropped: list[str]
) -> tuple[tuple[str, str], ...]:
    """(display name, address) pairs, parsed on the undecoded header (see maildesk.core.address)."""
    parsed = parse_addresses(header, message.get_all(header.lower(), []), _fix_surrogates)
    dropped.extend(parsed.problems)
    return parsed.addresses


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


def _attachments(items: list[dict[str, object]]) -> list[Attachment]:
    result = []
    for item in items:
        payload = item.get("payload") or ""
        if item.get("binary"):
            try:
                data = base64.b64decode(str(payload))
            except ValueError:
                data = str(payload).encode("utf-8", "surrogateescape")
        else:
            data = str(payload).encode("utf-8", "surrogateescape")
        result.append(
            Attachment(
                filename=safe_filename(str(item.get("filename") or "attachment")),
                content_type=str(item.get("mail_content_type") or "application/octet-stream"),
                payload=data,
            )
        )
    return result


def safe_filename(name: str) -> str:
    """A display name that can never act as a path (invariant 5)."""
    name = decode_header_value(name).replace("\\", "/").split("/")[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return name[:200] or "attachment"


def _bodies(message: email.message.Message) -> tuple[list[str], list[str]]:
    """Inline text/plain and text/html parts, decoded with charset fallbacks."""
    text: list[str] = []
    html: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            continue
        if part.get_content_subtype() not in ("plain", "html"):
            continue
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
        if not isinstance(data, bytes):
            raw_payload = part.get_payload()
            data = (
                raw_payload.encode("utf-8", "surrogateescape")
                if isinstance(raw_payload, str)
                else b""
            )
        decoded = decode_bytes(data, part.get_content_charset())
        (html if part.get_content_subtype() == "html" else text).append(decoded)
    return [t for t in text if t.strip()], [h for h in html if h.strip()]


def _delivery_report(message: email.message.Message) -> DeliveryReport | None:
    if message.get_content_type() != "multipart/report":
        return None
    original: str | None = None
    failed: list[str] = []
    permanent = False
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            for block in _status_blocks(part):
                action = block.get("action", "").lower()
                status = block.get("status", "")
                recipient = block.get("final-recipient") or block.get("original-recipient") or ""
                recipient = recipient.split(";")[-1].strip().lower()
                if action == "failed" or status.startswith("5"):
                    permanent = permanent or status.startswith("5") or action == "failed"
                    if recipient:
                        failed.append(recipient)
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _original_message_id(part)
    return DeliveryReport(original, tuple(failed), permanent)


def _status_blocks(part: email.message.Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses delivery-status into header blocks
        return [
            {k.lower(): str(v).strip() for k, v in block.items()}
            for block in payload
            if isinstance(block, email.message.Message)
        ]
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in str(payload).splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _original_message_id(part: email.message.Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        inner = payload[0]
        if isinstance(inner, email.message.Message):
            return normalise_message_id(inner.get("message-id"))
    found = re.search(r"(?im)^message-id:\s*(<[^>\s]+>)", str(payload))
    return normalise_message_id(found.group(1)) if found else None


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
