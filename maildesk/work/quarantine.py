"""Staff decisions on spam: quarantine a ticket, or release it as ham.

`mark_ticket` is what `maildesk spam mark`, `maildesk do` and the staff `#spam` /
`#ham` mail commands call: the model learns the decision (a sure verdict the
daemon learned before is forgotten first: `spamlearn.relearn`) and, on release,
the mails maildesk.core.release decides go out (the held confirmation).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.classify import classify
from maildesk.core.parse import InboundMail, parse_mail
from maildesk.core.release import HELD, QUARANTINE, decide_release
from maildesk.core.tid import format_tid
from maildesk.errors import NotFound
from maildesk.storage import enqueue, facts
from maildesk.storage.models import Inbound, Message, Ticket
from maildesk.storage.pending import add_event
from maildesk.storage.tickets import ticket_state
from maildesk.work.spamlearn import relearn

if TYPE_CHECKING:
    from maildesk.spam import SpamFilter



def _first_mail(session: Session, ticket_id: int) -> tuple[int, Inbound, InboundMail]:
    """The ticket's first inbound message (the one the filter scored): id, raw, parsed."""
    row = session.exec(
        select(Message.id, Inbound)
        .join(Message, col(Message.inbound_id) == col(Inbound.id))
        .where(Message.ticket_id == ticket_id, Message.direction == "in")
        .order_by(col(Message.id))
        .limit(1)
    ).first()
    if row is None or row[0] is None:
        raise NotFound(f"{format_tid(ticket_id)} has no stored mail to learn from")
    message_id, inbound = row
    return message_id, inbound, parse_mail(bytes(inbound.raw))


def mark_ticket(
    session: Session,
    ticket_id: int,
    is_spam: bool,
    runtime: Runtime,
    spam_filter: SpamFilter | None,
    actor: str,
    now: datetime,
) -> str:
    """Apply a staff decision in the caller's transaction; returns what happened, in words.

    The one entry point for staff decisions (`maildesk spam mark`, and the `#spam` /
    `#ham` mail commands): the filter learns the mail at once (unless it already holds
    it with that label) and replaces its model file atomically, which a running daemon
    reloads within 5 s. ``spam_filter`` None
    (the model file is unusable, e.g. from an older maildesk) applies the decision
    without learning it.
    """
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {format_tid(ticket_id)}")
    message_id, inbound, mail = _first_mail(session, ticket_id)
    learned = "model not updated"
    if spam_filter is not None:
        learned = relearn(session, spam_filter, message_id, mail, is_spam)
    tid = format_tid(ticket_id)
    previous = ticket.status
    if is_spam:
        if previous != QUARANTINE:
            ticket.status = QUARANTINE
            detail = f"{previous} -> spam (marked by staff)"
            add_event(session, ticket_id, now, actor, "spam", detail)
        session.add(ticket)
        return f"{tid} is spam: quarantined, {learned}"
    if previous not in (QUARANTINE, HELD):
        add_event(session, ticket_id, now, actor, "ham", "confirmed not spam")
        return f"{tid} was not held; {learned} (ham)"
    ticket.status = "new"
    ticket.updated_at = now
    session.add(ticket)
    kind = classify(mail, inbound.envelope_from, frozenset(runtime.settings.support_addresses))
    sender = facts.sender_facts(session, mail.from_addr, now)
    state = ticket_state(session, ticket)
    release = decide_release(mail, kind, sender, state, previous, runtime.policy, actor)
    for event_kind, detail in release.events:
        add_event(session, ticket_id, now, actor, event_kind, detail)
    enqueue.queue_mails(session, state, mail, release.mails, runtime, now)
    sent = f"no confirmation ({release.refusal})" if release.refusal else "confirmation queued"
    return f"{tid} released as ham: {sent}; {learned}"
