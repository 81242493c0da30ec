"""The customer's mail inside a staff member's forward, for `#new-for`. Pure.

Two shapes reach us:
- forwarded as an attachment (message/rfc822): its own headers, parsed as a mail;
- forwarded inline, below a separator line the mail client writes, then a header block:
  Gmail "---------- Forwarded message ---------" with From/Date/Subject/To, Outlook
  "-----Original Message-----" or a line of underscores with From/Sent/To/Subject
  (From: Name [mailto:addr] in older versions), Thunderbird "-------- Forwarded Message
  --------", Apple Mail "Begin forwarded message:", and the Russian versions of these.
The From value is parsed with the RFC 5322 address parser like any header (an inline
block is text a customer could have written, so it only names the requester; it proves
nothing and gives no one any power).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maildesk.core.address import parse_addresses
from maildesk.core.parse import InboundMail, parse_mail
from maildesk.core.tid import clean_subject
from maildesk.errors import MalformedMail

_SEPARATOR = re.compile(
    r"^[ \t>]*(?:-{2,}[ \t]*(?:forwarded message|original message|forwarded message|"
    r"пересылаемое сообщение|исходное сообщение|переадресованное сообщение)[ \t]*-{2,}"
    r"|begin forwarded message:|начало переадресованного сообщения:|_{20,})[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER = re.compile(r"^[ \t>]*\*?([A-Za-zА-Яа-яё]+)\*?:[ \t]*(.*)$")
_NAMES = {
    "from": "from", "от": "from", "sent": "date", "date": "date", "дата": "date",
    "отправлено": "date", "to": "to", "кому": "to", "cc": "cc", "копия": "cc",
    "subject": "subject", "тема": "subject",
}
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]", re.IGNORECASE)


@dataclass(frozen=True)
class Forwarded:
    address: str  # lowercased addr-spec
    name: str
    subject: str
    text: str


def find_forwarded(mail: InboundMail) -> Forwarded | None:
    """The original mail of a forward, or None when there is no recognisable one."""
    for raw in mail.attached_mails:
        try:
            inner = parse_mail(raw)
        except MalformedMail:
            continue
        if inner.from_addr:
            return Forwarded(inner.from_addr, inner.from_name,
                             clean_subject(inner.subject), inner.text.strip())
    return _inline(mail.text)


def _inline(text: str) -> Forwarded | None:
    found = _SEPARATOR.search(text.replace("\r\n", "\n"))
    if found is None:
        return None
    lines = text.replace("\r\n", "\n")[found.end():].lstrip("\n").split("\n")
    headers: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i].strip() and i < 20:
        matched = _HEADER.match(lines[i])
        if matched is None:
            break
        key = _NAMES.get(matched.group(1).lower())
        if key is not None and key not in headers:
            headers[key] = matched.group(2).strip()
        i += 1
    if "from" not in headers:
        return None
    value = _MAILTO.sub(lambda m: f"<{m.group(1)}>", headers["from"])
    parsed = parse_addresses("From", [value])
    if len(parsed.addresses) != 1:
        return None
    name, address = parsed.addresses[0]
    body = "\n".join(line[1:].lstrip() if line.startswith(">") else line for line in lines[i:])
    return Forwarded(address, name, clean_subject(headers.get("subject", "")), body.strip())
