"""A ticket row as the core sees it (TicketState), with its people."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from maildesk.core.decision import TicketState
from maildesk.storage.models import Participant, Ticket
from maildesk.storage.pending import AWARE, pending

OPEN_STATUSES = ("new", "open", "pending")
_PEOPLE = select(Participant.address, Participant.role).where(
    Participant.ticket_id == bindparam("ticket")
).execution_options(**AWARE)


_WITH_PEOPLE = (
    select(Ticket, Participant.address, Participant.role)
    .outerjoin(Participant, col(Participant.ticket_id) == col(Ticket.id))
    .where(Ticket.id == bindparam("ticket"))
    .execution_options(**AWARE)
)


def load_ticket(session: Session, ticket_id: int) -> tuple[Ticket, TicketState] | None:
    """A ticket and its pure view, people included, in one statement."""
    rows = list(session.exec(_WITH_PEOPLE, params={"ticket": ticket_id}))
    if not rows:
        return None
    ticket = rows[0][0]
    people = [(a, r) for _, a, r in rows if a is not None]
    return ticket, ticket_state(session, ticket, people=people)


def ticket_state(
    session: Session | None, ticket: Ticket, participants: frozenset[str] | None = None,
    people: list[tuple[str, str]] | None = None,
) -> TicketState:
    """The pure view of a ticket; participants are read unless the caller knows them
    (`participants`), or has read the people rows (`people`: address, role)."""
    assert ticket.id is not None
    cc: frozenset[str] = frozenset()
    staff: frozenset[str] = frozenset()
    co: frozenset[str] = frozenset()
    if participants is None:
        assert session is not None, "the people are read from the session"
        rows = people if people is not None else [(a, r) for a, r in session.exec(
            _PEOPLE, params={"ticket": ticket.id})]
        rows += [(p["address"], p["role"]) for p in pending(session).waiting("participant")
                 if p["ticket_id"] == ticket.id]
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


def new_ticket_state(
    ticket_id: int, values: Mapping[str, Any], participants: frozenset[str]
) -> TicketState:
    """The pure view of a ticket just inserted from these column values."""
    return ticket_state(None, Ticket(id=ticket_id, **values), participants)
