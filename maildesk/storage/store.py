"""Database side of the pipeline: write a Decision (ticket, message, people, events,
SLA clocks, attachments), then `enqueue` its mails (maildesk.storage.enqueue). What
is read before deciding is in maildesk.storage.facts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.decide import Decision, NewTicket, TicketState
from maildesk.core.identity import Identity
from maildesk.core.parse import InboundMail
from maildesk.core.sla import SlaConfig
from maildesk.core.tid import format_tid
from maildesk.storage.db import is_postgres
from maildesk.storage.enqueue import kv_set, queue_alerts, queue_mails
from maildesk.storage.models import KV, Inbound, Message, Participant, Suppression, Ticket
from maildesk.storage.models import Attachment as AttachmentRow
from maildesk.storage.pending import add_event, pending
from maildesk.storage.slastore import CLOCK_COLUMNS, advance_clocks, start_clocks
from maildesk.storage.tickets import new_ticket_state, ticket_state

if TYPE_CHECKING:
    from maildesk.spam import SpamVerdict

def store_attachment_bytes(directory: Path, payload: bytes) -> str:
    """Content-addressed: data/attachments/ab/abcdef...; written durably, never by name."""
    digest = hashlib.sha256(payload).hexdigest()
    target = directory / digest[:2] / digest
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(target)
    return digest


@dataclass(frozen=True)
class Applied:
    """What `apply` wrote: the ticket that holds the mail (None: none does), and for the
    decision's mails the ticket as it is now, the message the mail was stored as (None:
    recorded as events only) and the rules that fired for a new ticket."""

    ticket_id: int | None = None
    ticket: TicketState | None = None
    stored_id: int | None = None
    rules_fired: tuple[str, ...] = ()


def apply(
    session: Session,
    decision: Decision,
    inbound: Inbound,
    mail: InboundMail,
    runtime: Runtime,
    now: datetime,
    spam: SpamVerdict | None = None,
    identity: Identity | None = None,
) -> Applied:
    """Write the decision: ticket, message, people, events, SLA clocks; admin alerts go
    to the outbox here. The decision's own mails go with `enqueue`."""
    queue_alerts(session, decision.alerts, runtime, now)
    if decision.action == "refused":  # nothing opened; the raw mail stays in inbound
        return Applied()
    if decision.action == "orphan_bounce":
        _suppress(session, decision.suppress, runtime, now)
        return Applied()
    actor = mail.from_addr or "(unknown sender)"
    if decision.action == "note":  # recorded on the ticket; the raw mail stays in inbound
        assert decision.ticket is not None
        _add_events(session, decision.ticket.id, now, actor, decision.events)
        return Applied(decision.ticket.id)
    if decision.new_ticket is not None:
        state = _open_ticket(session, decision.new_ticket, runtime, now)
    else:
        ticket = _change_ticket(session, decision, mail, runtime, now)
        assert decision.ticket is not None
        state = ticket_state(session, ticket, decision.ticket.participants | set(decision.add_cc))
    _add_events(session, state.id, now, actor, decision.events)
    stored = _store_message(session, state.id, decision, inbound, mail, spam, identity, now)
    if stored is not None:
        _store_attachments(session, stored, mail, runtime.settings.data_dir / "attachments")
    _suppress(session, decision.suppress, runtime, now)
    if decision.held_done is not None:
        _forget_held(session, decision.held_done)
    rules = decision.new_ticket.rules_fired if decision.new_ticket else ()
    return Applied(state.id, state, stored, rules)


def enqueue(
    session: Session, applied: Applied, mail: InboundMail, decision: Decision,
    runtime: Runtime, now: datetime,
) -> None:
    """The decision's mails, rendered into the outbox (maildesk.storage.enqueue)."""
    if applied.ticket is not None:
        queue_mails(session, applied.ticket, mail, decision.mails, runtime, now,
                    applied.rules_fired, applied.stored_id, decision.new_ticket is not None)


_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('ticket', 'id'))"
                 " FROM generate_series(1, :n)")


def new_ticket_id(session: Session) -> int:
    """The id (the TID) of a ticket this transaction opens, taken for as many tickets as
    the chunk's mails may open (`Pending.tickets_expected`). PostgreSQL: from the
    table's sequence (one left unused is a gap, as a rollback leaves one). SQLite: after
    the highest ticket; the transaction holds the write lock (BEGIN IMMEDIATE) until it
    commits, and the read flushes the tickets still waiting first."""
    buffer = pending(session)
    if not buffer.ticket_ids:
        wanted = max(buffer.tickets_expected, 1)
        if is_postgres(session.get_bind()):
            rows = session.connection().execute(_NEXT_IDS, {"n": wanted})
            buffer.ticket_ids = [int(i) for (i,) in rows]
        else:
            top = int(session.exec(select(func.max(col(Ticket.id)))).one() or 0)
            buffer.ticket_ids = list(range(top + 1, top + 1 + wanted))
    return buffer.ticket_ids.pop(0)


def _open_ticket(
    session: Session, new: NewTicket, runtime: Runtime, now: datetime
) -> TicketState:
    """The ticket, its people and the round-robin pointer wait in the batch's buffer
    (maildesk.storage.pending), inserted with the batch's other rows."""
    values: dict[str, object] = {
        "subject": new.subject, "status": new.status, "priority": new.priority,
        "category": new.category, "requester": new.requester,
        "requester_name": new.requester_name, "assignee": new.assignee,
        "assigned_group": new.group, "sla_level": new.sla_level, "language": new.language,
        "created_at": now, "updated_at": now, "first_response_due": new.first_response_due,
        "linked_to": new.linked_to, "last_customer_at": now, "time_spent_minutes": 0,
        "first_response_at": None, "pending_until": None, "merged_into": None,
        "rating": None, "rating_comment": None, "rated_at": None, "resolved_at": None,
        "closed_at": None,
    }
    values.update(_start_clocks(session, runtime.sla, new, now))
    ticket_id = new_ticket_id(session)
    buffer = pending(session)
    buffer.add("ticket", {**values, "id": ticket_id}, new.requester)  # their last hour
    if new.requester:
        buffer.add("participant", {"ticket_id": ticket_id, "address": new.requester,
                                   "name": new.requester_name, "role": "requester"})
    for cc in new.cc:
        buffer.add("participant", {"ticket_id": ticket_id, "address": cc, "role": "cc"})
    if new.group and new.assignee:
        kv_set(session, f"rr:{new.group}", new.assignee)
    return new_ticket_state(ticket_id, values, frozenset({new.requester, *new.cc}))


def _start_clocks(
    session: Session, sla: SlaConfig, new: NewTicket, now: datetime
) -> dict[str, object]:
    """The SLA clock columns of a new ticket: the same for every ticket of a batch with
    the same level and status (one `now`), so computed once per batch."""
    memo = pending(session).memo
    key = ("clocks", id(sla), new.sla_level, new.status, now)
    if key not in memo:
        row = Ticket(sla_level=new.sla_level, status=new.status, subject="", requester="",
                     created_at=now, updated_at=now)
        start_clocks(row, sla, now)
        memo[key] = {name: getattr(row, name) for name in CLOCK_COLUMNS}
    return dict(memo[key])


def _change_ticket(
    session: Session, decision: Decision, mail: InboundMail, runtime: Runtime, now: datetime
) -> Ticket:
    assert decision.ticket is not None
    ticket = update_ticket(session, decision, now, runtime.sla)
    buffer = pending(session)
    for cc in decision.add_cc:
        buffer.add("participant", {"ticket_id": decision.ticket.id, "address": cc, "role": "cc"})
    author = mail.from_addr
    known = decision.ticket.participants | decision.ticket.staff
    if decision.message_kind == "staff" and author not in known:
        buffer.add("participant",
                   {"ticket_id": decision.ticket.id, "address": author, "role": "staff"})
    session.add(ticket)
    return ticket


def _store_message(
    session: Session, ticket_id: int, decision: Decision, inbound: Inbound,
    mail: InboundMail, spam: SpamVerdict | None, identity: Identity | None, now: datetime,
) -> int | None:
    """The mail as a message row: waits in the buffer, unless its id is needed now (its
    attachments point at it, a held answer is kept there): then inserted at once, after
    what waits (ids keep the order of the mails). Returns that id."""
    internal = decision.message_kind in ("staff", "bounce")
    row = {
        "ticket_id": ticket_id, "inbound_id": inbound.id, "direction": "in",
        "kind": decision.message_kind,
        "visibility": decision.visibility or ("internal" if internal else "public"),
        "dedupe_key": mail.dedupe_key, "message_id": mail.message_id,
        "from_addr": mail.from_addr, "to_addrs": ", ".join((*mail.to, *mail.cc)),
        "subject": mail.subject, "body_text": mail.text, "body_html": mail.html,
        "defects": ", ".join(mail.defects),
        "spam_probability": spam.probability if spam else None,
        "spam_band": spam.band if spam and spam.scored else None,
        "spam_model": spam.model_version if spam else None,
        "identity": identity.role if identity else None,
        "identity_reason": identity.reason if identity else None,
        "body_hash": mail.body_hash, "created_at": now,
    }
    buffer = pending(session)
    buffer.add("message", row, mail.from_addr)
    if not mail.attachments and not any(i.template == "held" for i in decision.mails):
        return None
    buffer.flush(session)
    found = session.exec(
        select(Message.id).where(Message.dedupe_key == mail.dedupe_key)
    ).first()
    assert found is not None
    return found


def _store_attachments(
    session: Session, message_id: int, mail: InboundMail, directory: Path
) -> None:
    for att in mail.attachments:
        digest = store_attachment_bytes(directory, att.payload)
        session.add(AttachmentRow(message_id=message_id, filename=att.filename,
                                  content_type=att.content_type, size=len(att.payload),
                                  sha256=digest))


def update_ticket(
    session: Session, decision: Decision, now: datetime, sla: SlaConfig
) -> Ticket:
    """A decision's changes to an existing ticket: status, first response, fields, and
    the SLA clocks they move."""
    assert decision.ticket is not None
    ticket = session.get(Ticket, decision.ticket.id)
    assert ticket is not None
    old_level, answered_before = ticket.sla_level, ticket.first_response_at is not None
    ticket.updated_at = now
    if decision.reopen:
        ticket.status = "open"
    if decision.status:
        ticket.status = decision.status
    if decision.first_response:
        ticket.first_response_at = now
    if decision.status == "resolved":
        ticket.resolved_at = now
    elif decision.status == "closed":
        ticket.closed_at = now
    _apply_changes(ticket, decision.changes, now)
    relevelled = advance_clocks(
        ticket, sla, now, old_level=old_level, answered_before=answered_before,
        customer_reply=decision.message_kind == "customer" and decision.visibility != "internal",
        staff_answer=decision.message_kind == "staff" and decision.visibility == "public",
    )
    if relevelled:
        add_event(session, decision.ticket.id, now, "maildesk", "sla", relevelled)
    session.add(ticket)
    _change_people(session, ticket, decision.changes, now)
    return ticket


def _change_people(
    session: Session, ticket: Ticket, changes: tuple[tuple[str, str], ...], now: datetime
) -> None:
    """#co, #cc add/remove, and #merge's move of the people to the surviving ticket."""
    assert ticket.id is not None
    for field, value in changes:
        if field in ("co", "cc_add"):
            row = session.exec(select(Participant).where(
                Participant.ticket_id == ticket.id, Participant.address == value)).first()
            role = "co" if field == "co" else "cc"
            if row is None:
                session.add(Participant(ticket_id=ticket.id, address=value, role=role))
            elif row.role not in ("requester", role):
                row.role = role
                session.add(row)
        elif field == "cc_remove":
            for row in session.exec(select(Participant).where(
                    Participant.ticket_id == ticket.id, Participant.address == value,
                    Participant.role == "cc")).all():
                session.delete(row)
        elif field == "merged_into":
            _merge_people(session, ticket, int(value), now)


def _merge_people(session: Session, ticket: Ticket, into: int, now: datetime) -> None:
    """The merged ticket's people may write to the survivor: its requester and cc become
    cc there (the survivor keeps its own requester)."""
    assert ticket.id is not None
    there = {p.address for p in session.exec(
        select(Participant).where(Participant.ticket_id == into)).all()}
    moved = []
    for person in session.exec(select(Participant).where(
            Participant.ticket_id == ticket.id)).all():
        if person.address not in there and person.role != "staff":
            role = "co" if person.role == "co" else "cc"
            session.add(Participant(ticket_id=into, address=person.address,
                                    name=person.name, role=role))
            moved.append(person.address)
    detail = f"{format_tid(ticket.id)} merged into this ticket"
    if moved:
        detail += f"; now on it: {', '.join(moved)}"
    add_event(session, into, now, "maildesk", "merge", detail)


def _add_events(
    session: Session,
    ticket_id: int,
    now: datetime,
    actor: str,
    events: Sequence[tuple[str, str]],
) -> None:
    """The events of one decision (they wait in the buffer: one executemany a batch)."""
    for kind, detail in events:
        add_event(session, ticket_id, now, actor, kind, detail)


def _forget_held(session: Session, message_id: int) -> None:
    for row in session.exec(  # flushes the buffer's small state first
        select(KV).where(col(KV.key).startswith("held:"), KV.value == str(message_id))
    ).all():
        session.delete(row)
    known = pending(session).kv_known
    for key in [k for k, v in known.items() if k.startswith("held:") and v == str(message_id)]:
        known[key] = None


def _apply_changes(ticket: Ticket, changes: tuple[tuple[str, str], ...], now: datetime) -> None:
    """Ticket fields set by staff commands (maildesk.core.answer.apply_commands) and ratings."""
    for field, value in changes:
        if field == "time_spent":
            ticket.time_spent_minutes += int(value)
        elif field == "pending_until":
            ticket.pending_until = datetime.fromisoformat(value)
        elif field == "rating":
            ticket.rating, ticket.rated_at = value, now
        elif field == "rating_comment":
            ticket.rating_comment = value
        elif field == "merged_into":
            ticket.merged_into = int(value)
        elif field in ("co", "cc_add", "cc_remove"):
            continue  # people: _change_people
        elif field in ("assignee", "assigned_group", "priority", "category", "sla_level"):
            setattr(ticket, field, value)
        else:
            raise ValueError(f"unknown ticket change {field!r}")


def _suppress(
    session: Session, addresses: tuple[str, ...], runtime: Runtime, now: datetime
) -> None:
    until = now + timedelta(hours=runtime.settings.bounce_suppress_hours)
    for address in addresses:
        pending(session).touch(address)
        row = session.get(Suppression, address) or Suppression(address=address, until=until)
        row.until = until
        row.reason = "hard bounce"
        session.add(row)


