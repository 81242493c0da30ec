"""A ticket row as the core sees it (TicketState), with its people."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
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
    return _view(partial(getattr, ticket), participants, cc, staff, co)  # loads if expired


def _view(
    column: Callable[[str], Any], participants: frozenset[str], cc: frozenset[str] = frozenset(),
    staff: frozenset[str] = frozenset(), co: frozenset[str] = frozenset(),
) -> TicketState:
    """A TicketState from a ticket's column values (an ORM row's, or an INSERT's), by name."""
    return TicketState(
        id=column("id"),
        status=column("status"),
        subject=column("subject"),
        requester=column("requester"),
        requester_name=column("requester_name"),
        participants=frozenset(participants) | {column("requester")},
        assignee=column("assignee"),
        group=column("assigned_group"),
        priority=column("priority"),
        category=column("category"),
        sla_level=column("sla_level"),
        language=column("language"),
        first_response_due=column("first_response_due"),
        cc=cc,
        staff=staff,
        updated_at=column("updated_at"),
        first_response_at=column("first_response_at"),
        linked_to=column("linked_to"),
        rating=column("rating"),
        co=co,
        merged_into=column("merged_into"),
        time_spent_minutes=column("time_spent_minutes"),
    )


def new_ticket_state(
    ticket_id: int, values: Mapping[str, Any], participants: frozenset[str]
) -> TicketState:
    """The pure view of a ticket just inserted from these column values."""
    return _view({**values, "id": ticket_id}.__getitem__, participants)
