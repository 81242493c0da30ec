"""The MIME walk of one mail: text and HTML bodies, attachments (mail-parser, for mail
that has them), forwarded mails, and what a delivery status report says."""

from __future__ import annotations

import base64
import copy
import email
import email.message
import logging
import re
from dataclasses import dataclass

from maildesk.core.mimetext import decode_bytes, decode_header_value
from maildesk.core.msgid import normalise_message_id

logging.getLogger("mailparser").setLevel(logging.CRITICAL)  # defects are reported by us


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


def attached_mails(message: email.message.Message, limit: int = 3) -> tuple[bytes, ...]:
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


def needs_mail_parser(message: email.message.Message) -> bool:
    """Whether mail-parser has anything to add: attachments, or a body only it recovers.

    Its parse is thorough and eager (every Received line, address and date
    diagnostics: 2-5 ms a mail), and most mail is one or two inline text parts,
    for which the stdlib's tree and ``bodies`` below give the same result.
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


def mime_view(message: email.message.Message) -> email.message.Message:
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


def stdlib_defects(message: email.message.Message) -> list[str]:
    """The defect classes the stdlib noted while parsing, as mail-parser names them."""
    return sorted({type(d).__name__ for part in message.walk() for d in part.defects})


def attachments_of(items: list[dict[str, object]]) -> list[Attachment]:
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


def bodies(message: email.message.Message) -> tuple[list[str], list[str]]:
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


def delivery_report(message: email.message.Message) -> DeliveryReport | None:
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
