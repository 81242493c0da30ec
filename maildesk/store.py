"""Database side of the pipeline: gather the facts `decide` needs, apply its Decision."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, insert, literal, null, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from maildesk.alerts import operator_mail
from maildesk.caps import (
    CAPPED_HOUR,
    CAPPED_TICKET,
    NOTIFICATION,
    Recent,
    cap_notifications,
    notice_lines,
)
from maildesk.classify import Classification
from maildesk.compose import OutgoingMail
from maildesk.correspondence import public_history, updates_sent
from maildesk.decision import Collision, HeldAnswer
from maildesk.identity import Identity
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
    Alert,
    Decision,
    MailIntent,
    SenderFacts,
    ThreadMatch,
    TicketState,
    Workload,
    may_join,
)
from maildesk.replytoken import verify_bounce, verify_rating
from maildesk.rules import RulesConfig
from maildesk.runtime import Runtime
from maildesk.sla import SlaConfig
from maildesk.slastore import advance_clocks, start_clocks
from maildesk.tid import clean_subject, find_tids, format_tid, parse_tid

if TYPE_CHECKING:
    from maildesk.spam import SpamVerdict

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


def is_duplicate(session: Session, dedupe_key: str) -> int | None:
    """The ticket that already holds this mail, if any (invariant 2)."""
    return session.exec(select(Message.ticket_id).where(Message.dedupe_key == dedupe_key)).first()


def stored_dedupe_keys(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """Which of these dedupe keys are stored already, and on which ticket (one query)."""
    if not keys:
        return {}
    rows = session.exec(
        select(Message.dedupe_key, Message.ticket_id).where(col(Message.dedupe_key).in_(keys))
    ).all()
    return {str(key): int(ticket) for key, ticket in rows if key is not None}


def _tickets_by_message_ids(session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Message-ID -> ticket, for mail we stored or sent."""
    ids = [i for i in dict.fromkeys(ids) if i][:50]
    if not ids:
        return {}
    sent = select(literal(0), Outbox.message_id, Outbox.ticket_id).where(
        col(Outbox.message_id).in_(ids), col(Outbox.ticket_id).is_not(None)
    )
    stored = select(literal(1), Message.message_id, Message.ticket_id).where(
        col(Message.message_id).in_(ids)
    )
    both: Any = union_all(sent, stored)  # one statement: what we sent wins
    found: dict[str, int] = {}
    for _, message_id, ticket_id in sorted(session.exec(both).all(), key=lambda r: r[0]):
        if message_id is not None and ticket_id is not None:
            found.setdefault(message_id, ticket_id)
    return found


def _our_mail_bounced(
    session: Session, mail: InboundMail, envelope_to: Sequence[str], key: bytes
) -> Outbox | None:
    """The outbound mail a delivery report is about: by its VERP return path, else by the
    Message-ID we gave it. A report naming neither is not about a mail we sent."""
    for address in [*envelope_to, *mail.to]:
        outbox_id = verify_bounce(address, key)
        if outbox_id is not None:
            return session.get(Outbox, outbox_id)
    original = mail.report.original_message_id if mail.report else None
    if not original:
        return None
    return session.exec(select(Outbox).where(Outbox.message_id == original)).first()


def lookup_thread(
    session: Session,
    mail: InboundMail,
    kind: Classification,
    identity: Identity,
    envelope_to: Sequence[str],
    key: bytes,
) -> ThreadMatch:
    """Bounce -> the mail that bounced; a staff reply token -> its ticket; else TID in
    the subject; else In-Reply-To/References. Joining needs `may_join` (invariant 5)."""
    if kind.kind == "bounce":
        bounced = _our_mail_bounced(session, mail, envelope_to, key)
        if bounced is None:
            return ThreadMatch(None, "bounce")
        ticket = session.get(Ticket, bounced.ticket_id) if bounced.ticket_id else None
        return ThreadMatch(
            ticket_state(session, ticket) if ticket else None,
            "bounce",
            bounce_recipients=tuple(a.lower() for a in bounced.recipients),
        )
    rated = _rating_token(session, mail, envelope_to, key)
    if rated is not None:
        return rated
    candidates = _candidates(session, mail, identity)
    ordered = _with_links(session, candidates)
    joinable = [(state, how) for state, how in ordered if may_join(state, identity)]
    sender = identity.address
    own = [(st, how) for st, how in joinable if sender and st.requester == sender]
    refused = [state for state, _ in ordered if not may_join(state, identity)]
    refused_ids = tuple(dict.fromkeys(state.id for state in refused))
    first_refused = refused[0] if refused else None
    chosen = own[0] if own else joinable[0] if joinable else None
    if chosen is None:
        why = "no tag, token or reference leads to a ticket"
        if refused:
            why = f"{format_tid(refused[0].id)} is named but the sender is not on it"
        return ThreadMatch(None, "none", refused_ids, first_refused, reason=why)
    state, how = chosen
    via: Literal["token", "tid", "reference"] = (
        "token" if how.startswith("reply token") else "tid" if how.startswith("subject") else
        "reference"
    )
    role = "requester" if state.requester == identity.address else (
        "staff" if identity.is_staff else "participant")
    return ThreadMatch(
        state, via, refused_ids, first_refused,
        reason=f"{format_tid(state.id)} by {how}; the sender is its {role}",
    )


def _rating_token(
    session: Session, mail: InboundMail, envelope_to: Sequence[str], key: bytes
) -> ThreadMatch | None:
    """A mail to a rating address of a resolution mail (an HMAC token: proof enough)."""
    for address in dict.fromkeys([*envelope_to, *mail.to, *mail.cc]):
        found = verify_rating(address, key)
        ticket = session.get(Ticket, found[0]) if found else None
        if found and ticket is not None:
            return ThreadMatch(ticket_state(session, ticket), "rating", rating=found[1],
                               reason=f"rating address of {format_tid(found[0])}: {found[1]}")
    return None


def _candidates(
    session: Session, mail: InboundMail, identity: Identity
) -> list[tuple[int, str]]:
    """Tickets the mail points at, the one to try first first: a reply token, subject
    tags (last first), In-Reply-To, then References newest to oldest."""
    found: list[tuple[int, str]] = []
    if identity.ticket_id is not None:
        found.append((identity.ticket_id, f"reply token for {format_tid(identity.ticket_id)}"))
    for number in find_tids(mail.subject):
        found.append((number, f"subject tag {format_tid(number)}"))
    refs = list(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)]))[:50]
    tickets = _tickets_by_message_ids(session, refs)
    for ref in refs:
        if ref in tickets:
            header = "In-Reply-To" if ref in mail.in_reply_to else "References"
            found.append((tickets[ref], f"{header} <{ref}>"))
    return found


def _with_links(
    session: Session, candidates: list[tuple[int, str]]
) -> list[tuple[TicketState, str]]:
    """Each candidate ticket, followed by the tickets it was linked from (opened for a
    participant who replied into another ticket): a reply to such a mail may belong
    to the original ticket."""
    out: list[tuple[TicketState, str]] = []
    seen: set[int] = set()
    for ticket_id, how in candidates:
        current: int | None = ticket_id
        label = how
        for _ in range(5):
            if current is None or current in seen:
                break
            found = session.get(Ticket, current)
            ticket = _survivor(session, found)  # mail to a merged ticket goes to the survivor
            if ticket is None or found is None or ticket.id in seen:
                break
            if ticket is not found:
                label = f"{label}, merged into {format_tid(ticket.id or 0)}"
            seen.update({current, ticket.id or 0})
            out.append((ticket_state(session, ticket), label))
            label = f"{how} via linked {format_tid(ticket.id or 0)}"
            current = ticket.linked_to
    return out


def body_hash(mail: InboundMail) -> str | None:
    """The same mail again from the same sender (an autoresponder, a loop) counts as one:
    subject without prefixes and TID, text, attachments. None when there is no text."""
    text = " ".join(mail.text.lower().split())
    if not text:
        return None
    digest = hashlib.sha256()
    for part in (clean_subject(mail.subject).lower(), text):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    for att in mail.attachments:
        digest.update(hashlib.sha256(att.payload).digest())
    return digest.hexdigest()


def sender_facts(
    session: Session,
    address: str,
    now: datetime,
    same_body: str | None = None,
    storms: bool = True,
    storm_limit: int | None = None,
) -> SenderFacts:
    """What the guards need to know about a sender, in one statement; each part is a
    lookup in an index bounded by the sender's last hour (migration 0005). The latest
    ticket is read only when the storm guard can use it (at `storm_limit` tickets)."""
    hour_ago = now - timedelta(hours=1)
    live = bool(address) and storms
    mine = (Ticket.requester == address, col(Ticket.created_at) >= hour_ago)
    same_query: Any = null()
    if live and same_body is not None:
        same_query = (
            select(Message.ticket_id)
            .where(
                Message.from_addr == address,
                Message.body_hash == same_body,
                col(Message.created_at) >= hour_ago,
            )
            .limit(1)
            .scalar_subquery()
        )
    facts: Any = sa_select(  # sqlmodel's select() takes at most four columns
        select(func.count())
        .select_from(Outbox)
        .where(
            Outbox.rcpt == address,
            Outbox.kind == "confirmation",
            col(Outbox.created_at) >= hour_ago,
        )
        .scalar_subquery(),
        select(Suppression.until).where(Suppression.address == address).scalar_subquery(),
        select(func.count()).select_from(Ticket).where(*mine).scalar_subquery(),
        select(func.max(Ticket.id)).where(*mine).scalar_subquery(),
        same_query,
        select(KV.value).where(KV.key == f"alert:storm:{address}"[:300]).scalar_subquery(),
    )
    row = session.exec(facts).one()
    count, until, new_tickets, latest_id, same_id, alerted_at = row
    latest: TicketState | None = None
    same: TicketState | None = None
    if live and latest_id is not None and (storm_limit is None or new_tickets >= storm_limit):
        found = session.get(Ticket, latest_id)
        latest = ticket_state(session, found) if found is not None else None
    if live and same_body is not None and same_id is not None:
        found = session.get(Ticket, same_id)
        same = ticket_state(session, found) if found is not None else None
    alerted = frozenset(
        {"storm"}
        if address and alerted_at and datetime.fromisoformat(alerted_at) > hour_ago
        else ()
    )
    return SenderFacts(
        auto_replies_last_hour=int(count),
        suppressed=bool(address) and until is not None and until > now,
        new_tickets_last_hour=int(new_tickets) if live else 0,
        latest_ticket=latest,
        same_body_ticket=same,
        alerted=alerted,
    )


def recent_alerts(session: Session, keys: dict[str, str | None], now: datetime) -> frozenset[str]:
    """Which of these alerts (kind -> address) went to the admins within the hour."""
    found = set()
    for kind, address in keys.items():
        if not address:
            continue
        row = session.get(KV, f"alert:{kind}:{address}"[:300])
        if row is not None and datetime.fromisoformat(row.value) > now - timedelta(hours=1):
            found.add(kind)
    return frozenset(found)


def workload(session: Session, rules: RulesConfig, group: str | None) -> Workload:
    """What assigning a new ticket to `group` needs: its round-robin pointer (one key;
    kept in the session, so recording the next pick reads it no more), and for a
    least_open group its members' open tickets, counted from (assignee, status) alone."""
    if group is None or group not in rules.groups:
        return Workload(open_counts={}, last_assigned={})
    pointer = session.get(KV, f"rr:{group}")
    counts: dict[str, int] = {}
    members = [m.email for m in rules.members_of(group)]
    if rules.groups[group].strategy == "least_open" and members:
        rows = session.exec(
            select(Ticket.assignee, func.count())
            .where(col(Ticket.assignee).in_(members), col(Ticket.status).in_(OPEN_STATUSES))
            .group_by(Ticket.assignee)
        ).all()
        counts = {str(a): int(n) for a, n in rows}
    return Workload(
        open_counts=counts, last_assigned={group: pointer.value} if pointer else {}
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
    Staff notifications are capped per recipient (maildesk.caps). `stored_id`: the
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


def staff_reply_facts(
    session: Session, ticket_id: int, mail: InboundMail, author: str, data_dir: Path
) -> tuple[Collision | None, HeldAnswer | None]:
    """For a staff mail on a ticket: is it the answer to a collision notice (a held
    answer waits), and did another staff member answer after the mail it replies to?"""
    replied = list(mail.in_reply_to)[:10]
    if not replied:
        return None, None
    for mid in replied:
        row = session.get(KV, f"held:{mid}"[:300])
        held = session.get(Message, int(row.value)) if row is not None else None
        if held is not None and held.ticket_id == ticket_id and held.from_addr == author:
            assert held.id is not None
            return None, HeldAnswer(held.id, held.body_text, _files_of(session, held.id, data_dir))
    since = session.exec(
        select(Outbox.created_at).where(
            col(Outbox.message_id).in_(replied), Outbox.ticket_id == ticket_id
        )
    ).first() or session.exec(
        select(Message.created_at).where(
            col(Message.message_id).in_(replied), Message.ticket_id == ticket_id
        )
    ).first()
    if since is None:
        return None, None
    other = session.exec(
        select(Message.from_addr, Message.body_text)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == "out",
            Message.kind == "answer",
            Message.from_addr != author,
            col(Message.created_at) > since,
        )
        .order_by(col(Message.id).desc())
    ).first()
    return (Collision(other[0], other[1]) if other else None), None


def _files_of(
    session: Session, message_id: int, data_dir: Path
) -> tuple[tuple[str, str, bytes], ...]:
    rows = session.exec(
        select(AttachmentRow).where(AttachmentRow.message_id == message_id)
    ).all()
    folder = data_dir / "attachments"
    return tuple(
        (a.filename, a.content_type, (folder / a.sha256[:2] / a.sha256).read_bytes())
        for a in rows
    )


def merge_targets(session: Session, numbers: Sequence[int]) -> tuple[TicketState, ...]:
    """The tickets a #merge names."""
    found = []
    for number in list(dict.fromkeys(numbers))[:10]:
        ticket = session.get(Ticket, number)
        if ticket is not None:
            found.append(ticket_state(session, ticket))
    return tuple(found)


def merge_numbers(text: str) -> list[int]:
    """Ticket numbers on the #merge lines at the top of a staff mail."""
    numbers = []
    for line in text.splitlines()[:50]:
        word, _, arg = line.strip().partition(" ")
        number = parse_tid(arg.strip()) if word.lower() == "#merge" else None
        if number is not None:
            numbers.append(number)
    return numbers


def _survivor(session: Session, ticket: Ticket | None) -> Ticket | None:
    for _ in range(5):
        if ticket is None or ticket.merged_into is None:
            return ticket
        ticket = session.get(Ticket, ticket.merged_into)
    return ticket


def _forget_held(session: Session, message_id: int) -> None:
    for row in session.exec(
        select(KV).where(col(KV.key).startswith("held:"), KV.value == str(message_id))
    ).all():
        session.delete(row)


def _apply_changes(ticket: Ticket, changes: tuple[tuple[str, str], ...], now: datetime) -> None:
    """Ticket fields set by staff commands (maildesk.answer.apply_commands) and ratings."""
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
