"""A ticket row as the core sees it (TicketState), with its people."""

from __future__ import annotations

from sqlmodel import Session, select

from maildesk.core.decision import TicketState
from maildesk.storage.models import Participant, Ticket

OPEN_STATUSES = ("new", "open", "pending")


def ticket_state(
    session: Session, ticket: Ticket, participants: frozenset[str] | None = None
) -> TicketState:
    """The pure view of a ticket; participants are read unless the caller knows them."""
    assert ticket.id is not None
    cc: frozenset[str] = frozenset()
    staff: frozenset[str] = frozenset()
    co: frozenset[str] = frozenset()
    if participants is None:
        rows = session.exec(
            select(Participant.address, Participant.role).where(
                Participant.ticket_id == ticket.id
            )
        ).all()
        # Staff who wrote on the ticket are not participants a mail may join as: only a
        # proven identity makes a mail staff (invariant 5).
        participants = frozenset(a for a, role in rows if role not in ("staff", "co"))
        cc = frozenset(a for a, role in rows if role == "cc")
        staff = frozenset(a for a, role in rows if role == "staff")
        co = frozenset(a for a, role in rows if role == "co")
    return TicketState(
        id=ticket.id,
        status=ticket.status,
        subject=ticket.subject,
        requester=ticket.requester,
        requester_name=ticket.requester_name,
        participants=frozenset(participants) | {ticket.requester},
        assignee=ticket.assignee,
        group=ticket.assigned_group,
        priority=ticket.priority,
        category=ticket.category,
        sla_level=ticket.sla_level,
        language=ticket.language,
        first_response_due=ticket.first_response_due,
        cc=cc,
        staff=staff,
        updated_at=ticket.updated_at,
        first_response_at=ticket.first_response_at,
        linked_to=ticket.linked_to,
        rating=ticket.rating,
        co=co,
        merged_into=ticket.merged_into,
        time_spent_minutes=ticket.time_spent_minutes,
    )
