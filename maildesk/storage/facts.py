"""What the pipeline reads before it decides (storage side): the ticket a mail belongs
to, the sender's recent history, the assignment state, a staff reply's collision or
held answer. Only reads; maildesk.storage.store writes the Decision."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, literal, null, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from maildesk.core.classify import Classification
from maildesk.core.decide import (
    SenderFacts,
    ThreadMatch,
    TicketState,
    Workload,
    may_join,
)
from maildesk.core.decision import Collision, HeldAnswer
from maildesk.core.identity import Identity
from maildesk.core.parse import InboundMail
from maildesk.core.replytoken import verify_bounce, verify_rating
from maildesk.core.rules import RulesConfig
from maildesk.core.tid import clean_subject, find_tids, format_tid
from maildesk.storage.models import (
    KV,
    Message,
    Outbox,
    Participant,
    Suppression,
    Ticket,
)
from maildesk.storage.models import Attachment as AttachmentRow

if TYPE_CHECKING:
    pass

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


def _survivor(session: Session, ticket: Ticket | None) -> Ticket | None:
    for _ in range(5):
        if ticket is None or ticket.merged_into is None:
            return ticket
        ticket = session.get(Ticket, ticket.merged_into)
    return ticket
