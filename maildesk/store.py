"""Database side of the pipeline: gather the facts `decide` needs, apply its Decision."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlmodel import Session, col, select

from maildesk.classify import Classification
from maildesk.models import (
    KV,
    Event,
    Inbound,
    Message,
    Outbox,
    Participant,
    Suppression,
    Ticket,
)
from maildesk.models import Attachment as AttachmentRow
from maildesk.notify import build_mails
from maildesk.parse import InboundMail
from maildesk.pipeline import (
    Decision,
    MailIntent,
    SenderFacts,
    ThreadMatch,
    TicketState,
    Workload,
    may_join,
)
from maildesk.rules import RulesConfig
from maildesk.runtime import Runtime
from maildesk.tid import find_tid

if TYPE_CHECKING:
    from maildesk.spam import SpamVerdict

OPEN_STATUSES = ("new", "open", "pending")


def ticket_state(
    session: Session, ticket: Ticket, participants: frozenset[str] | None = None
) -> TicketState:
    """The pure view of a ticket; participants are read unless the caller knows them."""
    assert ticket.id is not None
    if participants is None:
        participants = frozenset(
            session.exec(select(Participant.address).where(Participant.ticket_id == ticket.id))
        )
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
    )


def is_duplicate(session: Session, dedupe_key: str) -> int | None:
    """The ticket that already holds this mail, if any (invariant 2)."""
    return session.exec(select(Message.ticket_id).where(Message.dedupe_key == dedupe_key)).first()


def _ticket_by_message_ids(session: Session, ids: Iterable[str]) -> int | None:
    ids = [i for i in dict.fromkeys(ids) if i][:50]
    if not ids:
        return None
    found = session.exec(
        select(Message.ticket_id).where(col(Message.message_id).in_(ids)).limit(1)
    ).first()
    if found is not None:
        return found
    return session.exec(
        select(Outbox.ticket_id)
        .where(col(Outbox.message_id).in_(ids), col(Outbox.ticket_id).is_not(None))
        .limit(1)
    ).first()


def lookup_thread(
    session: Session, mail: InboundMail, kind: Classification, rules: RulesConfig
) -> ThreadMatch:
    """Bounce -> the mail that bounced; else TID in subject; else In-Reply-To/References."""
    if kind.kind == "bounce":
        original = mail.report.original_message_id if mail.report else None
        ticket_id = _ticket_by_message_ids(session, [original] if original else [])
        ticket = session.get(Ticket, ticket_id) if ticket_id else None
        return ThreadMatch(ticket_state(session, ticket) if ticket else None, "bounce")

    refused: list[int] = []
    candidates: list[tuple[int | None, str]] = [
        (find_tid(mail.subject), "tid"),
        (
            _ticket_by_message_ids(session, [*mail.in_reply_to, *reversed(mail.references)]),
            "reference",
        ),
    ]
    for ticket_id, via in candidates:
        if ticket_id is None:
            continue
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            continue
        state = ticket_state(session, ticket)
        if may_join(state, mail.from_addr, rules):
            return ThreadMatch(state, "tid" if via == "tid" else "reference", tuple(refused))
        refused.append(ticket_id)
    return ThreadMatch(None, "none", tuple(dict.fromkeys(refused)))


def sender_facts(session: Session, address: str, now: datetime) -> SenderFacts:
    hour_ago = now - timedelta(hours=1)
    count = session.exec(
        select(func.count())
        .select_from(Outbox)
        .where(
            Outbox.recipients == address,
            Outbox.kind == "confirmation",
            col(Outbox.created_at) >= hour_ago,
        )
    ).one()
    suppression = session.get(Suppression, address) if address else None
    return SenderFacts(
        auto_replies_last_hour=int(count),
        suppressed=suppression is not None and suppression.until > now,
    )


def workload(session: Session) -> Workload:
    rows = session.exec(
        select(Ticket.assignee, func.count())
        .where(col(Ticket.status).in_(OPEN_STATUSES), col(Ticket.assignee).is_not(None))
        .group_by(Ticket.assignee)
    ).all()
    pointers = session.exec(select(KV).where(col(KV.key).startswith("rr:"))).all()
    return Workload(
        open_counts={str(a): int(n) for a, n in rows},
        last_assigned={kv.key.removeprefix("rr:"): kv.value for kv in pointers},
    )


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
) -> int | None:
    """Write the decision: ticket, message, participants, events, outbox. Returns the ticket."""
    if decision.action == "orphan_bounce":
        _suppress(session, decision.suppress, runtime, now)
        return None
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
        )
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
        found = session.get(Ticket, decision.ticket.id)
        assert found is not None
        ticket = found
        ticket.updated_at = now
        if decision.reopen:
            ticket.status = "open"
        for cc in decision.add_cc:
            session.add(Participant(ticket_id=decision.ticket.id, address=cc, role="cc"))
        session.add(ticket)
    assert ticket.id is not None
    actor = mail.from_addr or "(unknown sender)"
    for kind, detail in decision.events:
        session.add(Event(ticket_id=ticket.id, at=now, actor=actor, kind=kind, detail=detail))

    message = Message(
        ticket_id=ticket.id,
        inbound_id=inbound.id,
        direction="in",
        kind=decision.message_kind,
        visibility="internal" if decision.message_kind in ("staff", "bounce") else "public",
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
    queue_mails(session, state, mail, decision.mails, runtime, now, rules_fired)
    return ticket.id


def queue_mails(
    session: Session,
    ticket: TicketState,
    mail: InboundMail,
    intents: tuple[MailIntent, ...],
    runtime: Runtime,
    now: datetime,
    rules_fired: tuple[str, ...] = (),
) -> None:
    """Render the intents and put them in the outbox, in the caller's transaction."""
    for intent, out in build_mails(
        intents,
        ticket,
        mail,
        runtime.templates,
        runtime.rules,
        runtime.sla,
        runtime.sender,
        now,
        rules_fired,
    ):
        session.add(
            Outbox(
                ticket_id=ticket.id,
                kind=intent.template,
                automatic=True,
                mail_from=out.mail_from,
                recipients=",".join(out.recipients),
                message_id=out.message_id,
                raw=out.raw,
                created_at=now,
                next_attempt_at=now,
            )
        )
        if intent.template == "confirmation":
            session.add(
                Message(
                    ticket_id=ticket.id,
                    direction="out",
                    kind="confirmation",
                    message_id=out.message_id,
                    from_addr=out.mail_from,
                    to_addrs=",".join(out.recipients),
                    subject=f"(confirmation to {', '.join(out.recipients)})",
                    created_at=now,
                )
            )


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
