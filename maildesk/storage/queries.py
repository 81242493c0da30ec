"""Read-only views for the command line (tickets, show, outbox, errors)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from maildesk.core.tid import format_tid, parse_tid
from maildesk.errors import NotFound
from maildesk.storage.db import read_only
from maildesk.storage.models import Attachment, Event, Inbound, Message, Outbox, Participant, Ticket

TICKET_STATUSES = ("new", "open", "answered", "pending", "resolved", "closed", "held", "spam")
OPEN_STATUSES = ("new", "open", "held")  # waiting for the first answer
OUTBOX_STATUSES = ("queued", "sent", "failed")


def _ticket_dict(t: Ticket) -> dict[str, Any]:
    assert t.id is not None
    return {
        "tid": format_tid(t.id),
        "id": t.id,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority,
        "category": t.category,
        "requester": t.requester,
        "requester_name": t.requester_name,
        "assignee": t.assignee,
        "group": t.assigned_group,
        "sla_level": t.sla_level,
        "language": t.language,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "first_response_due": t.first_response_due,
        "first_response_at": t.first_response_at,
        "pending_until": t.pending_until,
        "time_spent_minutes": t.time_spent_minutes,
        "resolved_at": t.resolved_at,
        "closed_at": t.closed_at,
        "rating": t.rating,
        "rating_comment": t.rating_comment,
        "merged_into": format_tid(t.merged_into) if t.merged_into else None,
        "linked_to": format_tid(t.linked_to) if t.linked_to else None,
    }


@dataclass(frozen=True)
class TicketFilter:
    status: str | None = None
    assignee: str | None = None  # an address, or "none" for unassigned
    requester: str | None = None
    level: str | None = None
    overdue_at: datetime | None = None  # first answer due before this, none given yet


def list_tickets(
    engine: Engine, status: str | None = None, limit: int = 100,
    where: TicketFilter | None = None,
) -> list[dict[str, Any]]:
    where = where or TicketFilter(status=status)
    with Session(read_only(engine)) as session:
        query = select(Ticket).order_by(col(Ticket.id).desc()).limit(limit)
        if where.status:
            query = query.where(Ticket.status == where.status)
        else:  # the quarantine is listed only on request (`--spam`)
            query = query.where(Ticket.status != "spam")
        if where.assignee == "none":
            query = query.where(col(Ticket.assignee).is_(None))
        elif where.assignee:
            query = query.where(Ticket.assignee == where.assignee.lower())
        if where.requester:
            query = query.where(Ticket.requester == where.requester.lower())
        if where.level:
            query = query.where(Ticket.sla_level == where.level)
        if where.overdue_at is not None:
            query = query.where(
                col(Ticket.status).in_(OPEN_STATUSES),
                col(Ticket.first_response_at).is_(None),
                col(Ticket.first_response_due) < where.overdue_at,
            )
        return [_ticket_dict(t) for t in session.exec(query).all()]


def show_ticket(engine: Engine, tid: str) -> dict[str, Any]:
    number = parse_tid(tid)
    if number is None:
        raise NotFound(f"{tid!r} is not a ticket ID (expected [MD-42], MD-42 or 42)")
    with Session(read_only(engine)) as session:
        ticket = session.get(Ticket, number)
        if ticket is None:
            raise NotFound(f"no ticket {format_tid(number)}")
        messages = session.exec(
            select(Message).where(Message.ticket_id == number).order_by(col(Message.id))
        ).all()
        by_message = _attachments_by_message(session, [m.id for m in messages])
        return {
            "ticket": _ticket_dict(ticket),
            "participants": [
                {"address": p.address, "name": p.name, "role": p.role}
                for p in session.exec(select(Participant).where(Participant.ticket_id == number))
            ],
            "messages": [_message_dict(m, by_message.get(m.id or 0, [])) for m in messages],
            "events": [
                {"at": e.at, "actor": e.actor, "kind": e.kind, "detail": e.detail}
                for e in session.exec(
                    select(Event).where(Event.ticket_id == number).order_by(col(Event.id))
                )
            ],
            "outbox": [
                _outbox_dict(o)
                for o in session.exec(
                    select(Outbox).where(Outbox.ticket_id == number).order_by(col(Outbox.id))
                )
            ],
        }


def _attachments_by_message(
    session: Session, message_ids: list[int | None]
) -> dict[int, list[dict[str, Any]]]:
    """Message id -> what is attached to it (name, type, size and hash, not the bytes)."""
    attachments = session.exec(
        select(Attachment).where(col(Attachment.message_id).in_(message_ids))
    ).all()
    by_message: dict[int, list[dict[str, Any]]] = {}
    for a in attachments:
        by_message.setdefault(a.message_id, []).append(
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
        )
    return by_message


def _message_dict(m: Message, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": m.id,
        "direction": m.direction,
        "kind": m.kind,
        "visibility": m.visibility,
        "message_id": m.message_id,
        "from_addr": m.from_addr,
        "to": m.to_addrs,
        "subject": m.subject,
        "body_text": m.body_text,
        "defects": m.defects,
        "spam_probability": m.spam_probability,
        "spam_band": m.spam_band,
        "spam_model": m.spam_model,
        "identity": m.identity,
        "identity_reason": m.identity_reason,
        "created_at": m.created_at,
        "inbound_id": m.inbound_id,
        "attachments": attachments,
    }


def _outbox_dict(o: Outbox) -> dict[str, Any]:
    return {
        "id": o.id,
        "tid": format_tid(o.ticket_id) if o.ticket_id else None,
        "kind": o.kind,
        "recipients": o.recipients,
        "message_id": o.message_id,
        "status": o.status,
        "attempts": o.attempts,
        "last_error": o.last_error,
        "created_at": o.created_at,
        "sent_at": o.sent_at,
    }


def list_outbox(
    engine: Engine, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with Session(read_only(engine)) as session:
        query = select(Outbox).order_by(col(Outbox.id).desc()).limit(limit)
        if status:
            query = query.where(Outbox.status == status)
        return [_outbox_dict(o) for o in session.exec(query)]


def list_errors(engine: Engine, limit: int = 100) -> list[dict[str, Any]]:
    with Session(read_only(engine)) as session:
        rows = session.exec(
            select(Inbound)
            .where(Inbound.status == "failed")
            .order_by(col(Inbound.id).desc())
            .limit(limit)
        ).all()
        return [
            {
                "id": r.id,
                "received_at": r.received_at,
                "source": r.source,
                "size": r.size,
                "error": r.error,
            }
            for r in rows
        ]
