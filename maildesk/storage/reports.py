"""The rows reports are made of (`TicketFacts`), loaded in one query per report
(maildesk.core.reports aggregates them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_
from sqlmodel import Session, col, select

from maildesk.core.reports import DONE_STATUSES, NOT_OPEN, TicketFacts
from maildesk.storage.db import read_only
from maildesk.storage.models import SlaStep, Ticket

_NAMES = tuple(f.name for f in fields(TicketFacts) if f.name != "reminders")
_COLUMNS = tuple(col(getattr(Ticket, name)) for name in _NAMES)


def _load(session: Session, where: Sequence[Any], reminders: bool = False) -> list[TicketFacts]:
    """Tickets matching `where` (merged ones never count), oldest first."""
    conditions = [col(Ticket.merged_into).is_(None), *where]
    rows = session.exec(
        select(*_COLUMNS).where(*conditions).order_by(col(Ticket.created_at), col(Ticket.id))
    ).all()
    sent: dict[int, int] = {}
    if reminders:
        counted = session.exec(
            select(SlaStep.ticket_id, func.count())
            .join(Ticket, col(Ticket.id) == col(SlaStep.ticket_id))
            .where(*conditions)
            .group_by(col(SlaStep.ticket_id))
        ).all()
        sent = {ticket_id: int(n) for ticket_id, n in counted}
    return [TicketFacts(**dict(zip(_NAMES, row, strict=True)), reminders=sent.get(row[0], 0))
            for row in rows]


def reading(engine: Engine) -> Session:
    """A session for the reports: reads only (no SQLite write lock)."""
    return Session(read_only(engine))


def load_created(session: Session, start: datetime, end: datetime) -> list[TicketFacts]:
    """Tickets created in [start, end), but spam, with the reminders sent about them."""
    return _load(session, [col(Ticket.created_at) >= start, col(Ticket.created_at) < end,
                           col(Ticket.status) != "spam"], reminders=True)


def load_open_due(session: Session, before: datetime) -> list[TicketFacts]:
    """Open tickets with a due time before `before` (the pure filter decides the rest)."""
    return _load(session, [
        col(Ticket.status).not_in(NOT_OPEN),
        or_(and_(col(Ticket.first_response_at).is_(None),
                 col(Ticket.first_response_due) <= before),
            col(Ticket.next_response_due) <= before,
            col(Ticket.resolution_due) <= before),
    ])


def load_done(session: Session, start: datetime, end: datetime) -> list[TicketFacts]:
    """Tickets resolved (or, never resolved, closed) in [start, end) and still done."""
    resolved, closed = col(Ticket.resolved_at), col(Ticket.closed_at)
    return _load(session, [
        col(Ticket.status).in_(DONE_STATUSES),
        or_(and_(resolved >= start, resolved < end),
            and_(resolved.is_(None), closed >= start, closed < end)),
    ])
