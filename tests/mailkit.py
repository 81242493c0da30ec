"""Helpers for tests that talk to maildesk like a mail client would."""

from __future__ import annotations

import email
import email.policy
import mailbox
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

_counter = iter(range(1, 10**9))


def make_mail(
    sender: str = "ann@example.org",
    to: str = "support@localhost",
    subject: str = "Printer on fire",
    body: str = "Hello,\nmy printer is on fire. Please help.\n",
    *,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
    cc: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<test-{next(_counter)}-{id(msg)}@client.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


def send(
    port: int, raw: bytes, rcpts: list[str] | None = None, mail_from: str = "ann@example.org"
) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(mail_from, rcpts or ["support@localhost"], raw)


def sent_mails(data_dir: Path) -> list[email.message.EmailMessage]:
    """Every mail maildesk delivered to its dev Maildir (data/sent)."""
    path = data_dir / "sent"
    if not path.exists():
        return []
    box = mailbox.Maildir(str(path), create=False)
    return [
        email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)  # type: ignore[misc]
        for key in box.iterkeys()
    ]


def mails_to(data_dir: Path, address: str) -> list[email.message.EmailMessage]:
    return [m for m in sent_mails(data_dir) if address in str(m["To"])]


def queue_outbox(
    engine: Any, recipients: list[str], tag: str = "q", body: bytes = b"x\r\n"
) -> None:
    """Outbound mails waiting in the outbox, due now: one per recipient, the n-th with
    Message-ID <{tag}{n}@maildesk>."""
    from sqlmodel import Session

    from maildesk.storage.models import Outbox, utcnow

    with Session(engine) as session:
        for n, rcpt in enumerate(recipients):
            session.add(Outbox(
                kind="confirmation", mail_from="support@localhost", recipients=[rcpt],
                message_id=f"<{tag}{n}@maildesk>",
                raw=f"Message-ID: <{tag}{n}@maildesk>\r\nSubject: {n}\r\n\r\n".encode() + body,
                created_at=utcnow(), next_attempt_at=utcnow(),
            ))
        session.commit()
