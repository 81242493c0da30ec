"""Build outbound RFC 5322 messages from rendered templates (pure).

Header values pass through email.headerregistry, which refuses CR/LF, so no
customer-controlled text can inject a header (DESIGN invariant 5).
"""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage

from maildesk.render import RenderedMail


@dataclass(frozen=True)
class OutgoingMail:
    message_id: str  # without angle brackets
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes


def _address(addr: str, name: str = "") -> Address:
    local, _, domain = addr.partition("@")
    return Address(display_name=" ".join(name.split()), username=local, domain=domain)


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
) -> OutgoingMail:
    domain = from_addr.partition("@")[2] or "localhost"
    msg_id = message_id or new_message_id(domain)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = _address(from_addr, from_name)
    msg["To"] = [_address(a) for a in to]
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = email.utils.format_datetime(now)
    msg["Message-ID"] = f"<{msg_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    refs = [r for r in dict.fromkeys([*references, *([in_reply_to] if in_reply_to else [])]) if r]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs[-20:])
    if reply_to:
        msg["Reply-To"] = _address(reply_to, from_name)
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"  # RFC 3834
        msg["X-Auto-Response-Suppress"] = "All"  # Exchange: do not answer with OOF
    msg.set_content(body.text, charset="utf-8")
    msg.add_alternative(body.html, subtype="html", charset="utf-8")
    return OutgoingMail(
        message_id=msg_id, mail_from=from_addr, recipients=tuple(to), raw=msg.as_bytes()
    )
