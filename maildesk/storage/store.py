"""Database side of the pipeline: write a Decision (ticket, message, people, events,
SLA clocks) and queue its mails. What is read before deciding is in maildesk.storage.facts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, insert
from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.alerts import operator_mail
from maildesk.core.caps import (
    CAPPED_HOUR,
    CAPPED_TICKET,
    NOTIFICATION,
    Recent,
    cap_notifications,
    notice_lines,
)
from maildesk.core.compose import OutgoingMail
from maildesk.core.decide import (
    Alert,
    Decision,
    MailIntent,
    TicketState,
)
from maildesk.core.identity import Identity
from maildesk.core.notify import build_mails
from maildesk.core.parse import InboundMail
from maildesk.core.sla import SlaConfig
from maildesk.core.tid import format_tid
from maildesk.storage.correspondence import public_history, updates_sent
from maildesk.storage.facts import body_hash
from maildesk.storage.models import (
    KV,
    Event,
    Inbound,
    Message,
    Outbox,
    Participant,
    Suppression,
    Ticket,
)
from maildesk.storage.models import Attachment as AttachmentRow
from maildesk.storage.slastore import advance_clocks, start_clocks
from maildesk.storage.tickets import ticket_state

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


def apply(
    session: Session,
    decision: Decision,
    inbound: Inbound,
    mail: InboundMail,
    runtime: Runtime,
    now: datetime,
    spam: SpamVerdict | None = None,
    identity: Identity | None = None,
) -> int | None:
    """Write the decision: ticket, message, participants, events, outbox. Returns the ticket."""
    _queue_alerts(session, decision.alerts, runtime, now)
    if decision.action == "refused":  # nothing opened; the raw mail stays in inbound
        return None
    if decision.action == "orphan_bounce":
        _suppress(session, decision.suppress, runtime, now)
        return None
    if decision.action == "note":  # recorded on the ticket; the raw mail stays in inbound
        assert decision.ticket is not None
        actor = mail.from_addr or "(unknown sender)"
        for kind, detail in decision.events:
            session.add(
                Event(ticket_id=decision.ticket.id, at=now, actor=actor, kind=kind, detail=detail)
            )
        return decision.ticket.id
    rules_fired: tuple[str, ...] = ()
    if decision.new_ticket is not None:
        new = decision.new_ticket
        ticket = Ticket(
            subject=new.subject,
            status=new.status,
            priority=new.priority,
            category=new.category,
            requester=new.requester,
            requester_name=new.requester_name,
            assignee=new.assignee,
            assigned_group=new.group,
            sla_level=new.sla_level,
            language=new.language,
            created_at=now,
            updated_at=now,
            first_response_due=new.first_response_due,
            linked_to=new.linked_to,
            last_customer_at=now,
        )
        start_clocks(ticket, runtime.sla, now)
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        if new.requester:
            session.add(
                Participant(
                    ticket_id=ticket.id,
                    address=new.requester,
                    name=new.requester_name,
                    role="requester",
                )
            )
        for cc in new.cc:
            session.add(Participant(ticket_id=ticket.id, address=cc, role="cc"))
        if new.group and new.assignee:
            _kv_set(session, f"rr:{new.group}", new.assignee)
        rules_fired = new.rules_fired
    else:
        assert decision.ticket is not None
        ticket = update_ticket(session, decision, now, runtime.sla)
        for cc in decision.add_cc:
            session.add(Participant(ticket_id=decision.ticket.id, address=cc, role="cc"))
        author = mail.from_addr
        known = decision.ticket.participants | decision.ticket.staff
        if decision.message_kind == "staff" and author not in known:
            session.add(Participant(ticket_id=decision.ticket.id, address=author, role="staff"))
        session.add(ticket)
    assert ticket.id is not None
    actor = mail.from_addr or "(unknown sender)"
    _add_events(session, ticket.id, now, actor, decision.events)

    message = Message(
        ticket_id=ticket.id,
        inbound_id=inbound.id,
        direction="in",
        kind=decision.message_kind,
        visibility=decision.visibility
        or ("internal" if decision.message_kind in ("staff", "bounce") else "public"),
        dedupe_key=mail.dedupe_key,
        message_id=mail.message_id,
        from_addr=mail.from_addr,
        to_addrs=", ".join((*mail.to, *mail.cc)),
        subject=mail.subject,
        body_text=mail.text,
        body_html=mail.html,
        defects=", ".join(mail.defects),
        spam_probability=spam.probability if spam else None,
        spam_band=spam.band if spam and spam.scored else None,
        spam_model=spam.model_version if spam else None,
        identity=identity.role if identity else None,
        identity_reason=identity.reason if identity else None,
        body_hash=body_hash(mail),
        created_at=now,
    )
    session.add(message)
    session.flush()
    assert message.id is not None
    attachment_dir = runtime.settings.data_dir / "attachments"
    for att in mail.attachments:
        digest = store_attachment_bytes(attachment_dir, att.payload)
        session.add(
            AttachmentRow(
                message_id=message.id,
                filename=att.filename,
                content_type=att.content_type,
                size=len(att.payload),
                sha256=digest,
            )
        )
    _suppress(session, decision.suppress, runtime, now)

    if decision.new_ticket is not None:
        participants = frozenset({decision.new_ticket.requester, *decision.new_ticket.cc})
    else:
        assert decision.ticket is not None
        participants = decision.ticket.participants | set(decision.add_cc)
    state = ticket_state(session, ticket, participants)
    queue_mails(session, state, mail, decision.mails, runtime, now, rules_fired, message.id)
    if decision.held_done is not None:
        _forget_held(session, decision.held_done)
    return ticket.id


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
        session.add(Event(ticket_id=decision.ticket.id, at=now, actor="maildesk", kind="sla",
                          detail=relevelled))
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
    session.add(Event(ticket_id=into, at=now, actor="maildesk", kind="merge", detail=detail))


def _add_events(
    session: Session,
    ticket_id: int,
    now: datetime,
    actor: str,
    events: Sequence[tuple[str, str]],
) -> None:
    """The events of one decision in one statement (the ORM inserts SQLite rows one by one)."""
    if events:
        session.flush()  # the ticket row first
        session.connection().execute(
            insert(Event),
            [
                {"ticket_id": ticket_id, "at": now, "actor": actor, "kind": k, "detail": d}
                for k, d in events
            ],
        )


def queue_mails(
    session: Session,
    ticket: TicketState,
    mail: InboundMail,
    intents: tuple[MailIntent, ...],
    runtime: Runtime,
    now: datetime,
    rules_fired: tuple[str, ...] = (),
    stored_id: int | None = None,
) -> None:
    """Render the intents and put them in the outbox, in the caller's transaction.
    Staff notifications are capped per recipient (maildesk.core.caps). `stored_id`: the
    message this mail was stored as (a held answer is kept there)."""
    capped: list[tuple[str, str]] = []
    kept: list[MailIntent] = []
    for intent in intents:
        if intent.template != "notification":
            kept.append(intent)
            continue
        result = cap_notifications(
            intent.recipients, _recent(session, intent.recipients, ticket.id, now), runtime.limits
        )
        if result.keep:
            kept.append(replace(intent, recipients=result.keep))
        capped.extend(result.notices)
        if result.held:
            session.add(
                Event(
                    ticket_id=ticket.id,
                    at=now,
                    actor="maildesk",
                    kind="notify_capped",
                    detail="not mailed (cap reached): " + ", ".join(result.held),
                )
            )
    kept = _cap_updates(session, ticket.id, kept, runtime.limits.per_ticket, now)
    answer_to = _last_customer_message_id(session, ticket.id) if any(
        i.template in ("answer", "update") for i in kept
    ) else None
    history = public_history(session, ticket.id, ticket.requester_name or ticket.requester,
                             runtime.rules) if any(i.event == "resolved" for i in kept) else []
    for intent, out in build_mails(
        tuple(kept),
        ticket,
        mail,
        runtime.templates,
        runtime.rules,
        runtime.sla,
        runtime.sender,
        now,
        rules_fired,
        answer_to,
        _previous_notifications(session, ticket.id, kept),
        runtime.settings.notify_attach_bytes,
        history,
    ):
        automatic = intent.template != "answer" and intent.reply is None
        add_outbox(session, ticket.id, intent.template, out, now, automatic)
        if intent.template == "held" and stored_id is not None:
            _kv_set(session, f"held:{out.message_id}"[:300], str(stored_id))
        if intent.template in ("confirmation", "answer", "update"):
            text = intent.reply.text if intent.reply else ""
            session.add(
                Message(
                    ticket_id=ticket.id,
                    direction="out",
                    kind="answer" if intent.reply else intent.template,
                    message_id=out.message_id,
                    from_addr=intent.author or out.mail_from,
                    to_addrs=", ".join(out.recipients),
                    subject=f"({intent.template} to {', '.join(out.recipients)})",
                    body_text=text,
                    created_at=now,
                )
            )
    for rcpt, kind in capped:
        subject, lines = notice_lines(kind, format_tid(ticket.id), runtime.limits)
        out = operator_mail(runtime.settings.primary_address, (rcpt,), subject, lines, now)
        add_outbox(session, ticket.id, kind, out, now)


def _cap_updates(
    session: Session, ticket_id: int, intents: list[MailIntent], limit: int, now: datetime
) -> list[MailIntent]:
    """At most `limit` update mails a ticket's requester gets an hour (an answer in a
    resolution mail always goes: a person wrote it)."""
    if not any(i.template == "update" and i.reply is None for i in intents):
        return intents
    room = limit - updates_sent(session, ticket_id, now)
    kept = []
    for intent in intents:
        if intent.template == "update" and intent.reply is None:
            if room <= 0:
                detail = f"{intent.event} mail not sent: {limit} within the hour"
                session.add(Event(ticket_id=ticket_id, at=now, actor="maildesk",
                                  kind="update_capped", detail=detail))
                continue
            room -= 1
        kept.append(intent)
    return kept


def _previous_notifications(
    session: Session, ticket_id: int, intents: Sequence[MailIntent]
) -> dict[str, str]:
    """Staff address -> Message-ID of the last notification about this ticket to them."""
    staff = sorted({r for i in intents if i.template == "notification" for r in i.recipients})
    if not staff:
        return {}
    rows = session.exec(
        select(Outbox.rcpt, Outbox.message_id)
        .where(
            Outbox.ticket_id == ticket_id,
            Outbox.kind == NOTIFICATION,
            col(Outbox.rcpt).in_(staff),
        )
        .order_by(col(Outbox.id))
    ).all()
    return {rcpt: message_id for rcpt, message_id in rows}  # the last one wins


def _last_customer_message_id(session: Session, ticket_id: int) -> str | None:
    return session.exec(
        select(Message.message_id)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == "in",
            Message.kind == "customer",
            col(Message.message_id).is_not(None),
        )
        .order_by(col(Message.id).desc())
        .limit(1)
    ).first()


def add_outbox(
    session: Session,
    ticket_id: int | None,
    kind: str,
    out: OutgoingMail,
    now: datetime,
    automatic: bool = True,
) -> None:
    session.add(
        Outbox(
            ticket_id=ticket_id,
            kind=kind,
            automatic=automatic,
            mail_from=out.mail_from,
            recipients=list(out.recipients),
            rcpt=out.recipients[0] if out.recipients else "",
            message_id=out.message_id,
            raw=out.raw,
            created_at=now,
            next_attempt_at=now,
        )
    )


def _recent(session: Session, recipients: Sequence[str], ticket_id: int, now: datetime) -> Recent:
    """Notifications and cap notices each recipient got within the hour (one query)."""
    rows = session.exec(
        select(Outbox.rcpt, Outbox.kind, Outbox.ticket_id, func.count())
        .where(
            col(Outbox.rcpt).in_(list(recipients)),
            col(Outbox.kind).in_([NOTIFICATION, CAPPED_TICKET, CAPPED_HOUR]),
            col(Outbox.created_at) >= now - timedelta(hours=1),
        )
        .group_by(col(Outbox.rcpt), col(Outbox.kind), col(Outbox.ticket_id))
    ).all()
    total: dict[str, int] = {}
    on_ticket: dict[str, int] = {}
    notices: set[tuple[str, str]] = set()
    for rcpt, kind, row_ticket, count in rows:
        if kind == NOTIFICATION:
            total[rcpt] = total.get(rcpt, 0) + int(count)
            if row_ticket == ticket_id:
                on_ticket[rcpt] = on_ticket.get(rcpt, 0) + int(count)
        elif kind == CAPPED_HOUR or row_ticket == ticket_id:
            notices.add((rcpt, kind))
    return Recent(total, on_ticket, frozenset(notices))


def _queue_alerts(
    session: Session, alerts: tuple[Alert, ...], runtime: Runtime, now: datetime
) -> None:
    """Admin alerts, at most one per kind and address an hour (the KV row remembers)."""
    admins = tuple(m.email for m in runtime.rules.admins)
    for alert in alerts:
        _kv_set(session, f"alert:{alert.kind}:{alert.address}"[:300], now.isoformat())
        to = alert.to or admins
        if to:
            out = operator_mail(runtime.settings.primary_address, to, alert.subject,
                                alert.lines, now)
            add_outbox(session, None, f"alert_{alert.kind}", out, now)


def _forget_held(session: Session, message_id: int) -> None:
    for row in session.exec(
        select(KV).where(col(KV.key).startswith("held:"), KV.value == str(message_id))
    ).all():
        session.delete(row)


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
        row = session.get(Suppression, address) or Suppression(address=address, until=until)
        row.until = until
        row.reason = "hard bounce"
        session.add(row)


def _kv_set(session: Session, key: str, value: str) -> None:
    row = session.get(KV, key) or KV(key=key, value=value)
    row.value = value
    session.add(row)
