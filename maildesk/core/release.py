"""What a staff decision on a held or quarantined ticket means (pure): released as ham,
the customer gets the confirmation that was held (unless a loop guard refuses it),
and staff who never heard of a quarantined ticket are told now."""

from __future__ import annotations

from dataclasses import dataclass

from maildesk.core.classify import Classification
from maildesk.core.decision import MailIntent, Policy, SenderFacts, TicketState
from maildesk.core.newticket import confirmation_refusal
from maildesk.core.parse import InboundMail

QUARANTINE = "spam"
HELD = "held"


@dataclass(frozen=True)
class Release:
    events: tuple[tuple[str, str], ...]  # (kind, detail)
    mails: tuple[MailIntent, ...]
    refusal: str | None  # why the confirmation stays unsent, or None


def decide_release(
    mail: InboundMail,
    kind: Classification,
    sender: SenderFacts,
    ticket: TicketState,
    previous: str,
    policy: Policy,
    actor: str,
) -> Release:
    """`previous`: the ticket's status before the release (held or spam)."""
    events = [("status", f"{previous} -> new (released as ham)")]
    mails: list[MailIntent] = []
    refusal = confirmation_refusal(kind, sender, policy, mail.from_addr)
    if refusal:
        events.append(("no_confirmation", refusal))
    else:
        mails.append(MailIntent("confirmation", (mail.from_addr,), ticket.language, "new"))
    if previous == QUARANTINE:  # staff were never told about it
        told = [ticket.assignee] if ticket.assignee else [m.email for m in policy.rules.admins]
        recipients = tuple(a for a in told if a and a != actor)
        if recipients:
            mails.append(MailIntent("notification", recipients, "en", "new"))
    return Release(tuple(events), tuple(mails), refusal)
