"""What kind of mail this is, for loop prevention (DESIGN invariant 4). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from maildesk.core.parse import InboundMail

Kind = Literal["normal", "auto_reply", "bounce"]

_DAEMON_RE = re.compile(r"^(mailer-daemon|postmaster|noreply|no-reply|do-not-reply|donotreply)@")
_AUTOREPLY_SUBJECT_RE = re.compile(
    r"^(auto(matic)?[ -]?(reply|response)|out of (the )?office|abwesenheit|автоответ|"
    r"автоматический ответ|вне офиса)",
    re.IGNORECASE,
)

# Subjects that give an auto-reply away on their own (Exchange, Outlook, Gmail, Yandex,
# Mail.ru in the languages our customers write): a prefix and a colon.
_AUTOREPLY_PREFIX_RE = re.compile(
    r"^\s*(automatic reply|auto[ -]?reply|auto[ -]?response|out of (the )?office( reply)?|"
    r"abwesenheitsnotiz|automatische antwort|réponse automatique|respuesta automática|"
    r"автоответ|автоматический ответ|вне офиса)\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Classification:
    kind: Kind
    may_auto_reply: bool  # False: never send an automatic mail in answer to this one
    reasons: tuple[str, ...]


def classify(
    mail: InboundMail, envelope_from: str | None, own_addresses: frozenset[str]
) -> Classification:
    """Decide whether this mail is a bounce, an auto-reply, or a person writing."""
    reasons: list[str] = []
    sender = mail.from_addr
    if mail.report is not None:
        return Classification("bounce", False, ("multipart/report",))
    if envelope_from == "" and _DAEMON_RE.match(sender):
        return Classification("bounce", False, ("null return path from mailer-daemon",))

    auto_submitted = (mail.header("auto-submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        reasons.append(f"Auto-Submitted: {auto_submitted}")
    if mail.header("x-autoreply") or mail.header("x-autorespond"):
        reasons.append("X-Autoreply")
    if "all" in (
        mail.header("x-auto-response-suppress") or ""
    ).lower() and _AUTOREPLY_SUBJECT_RE.match(mail.subject):
        reasons.append("X-Auto-Response-Suppress with auto-reply subject")
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence == "auto_reply":
        reasons.append("Precedence: auto_reply")
    if _AUTOREPLY_PREFIX_RE.match(mail.subject) or (
        _AUTOREPLY_SUBJECT_RE.match(mail.subject) and (precedence or auto_submitted)
    ):
        reasons.append("auto-reply subject")
    if reasons:
        return Classification("auto_reply", False, tuple(reasons))

    if precedence in ("bulk", "junk", "list"):
        reasons.append(f"Precedence: {precedence}")
    if mail.header("list-id"):
        reasons.append("List-Id")
    if envelope_from == "":
        reasons.append("null return path")
    if _DAEMON_RE.match(sender):
        reasons.append(f"daemon sender {sender}")
    if not sender:
        reasons.append("no From address")
    if sender in own_addresses:
        reasons.append("from our own address")
    return Classification("normal", not reasons, tuple(reasons))
