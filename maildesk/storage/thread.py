"""Which ticket a mail belongs to (storage side of threading): a delivery report ->
the mail that bounced; a rating address or a staff reply token -> its ticket; else
the TID in the subject; else In-Reply-To/References, following merges and links.
Joining needs `may_join` (invariant 5). Only reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import bindparam, literal, union_all
from sqlmodel import Session, col, select

from maildesk.core.classify import Classification
from maildesk.core.decide import ThreadMatch, TicketState, may_join
from maildesk.core.identity import Identity
from maildesk.core.parse import InboundMail
from maildesk.core.replytoken import verify_bounce, verify_rating
from maildesk.core.tid import find_tids, format_tid
from maildesk.storage.models import Message, Outbox, Ticket
from maildesk.storage.pending import AWARE, pending
from maildesk.storage.tickets import load_ticket, ticket_state

_SENT = select(literal(0), Outbox.message_id, Outbox.ticket_id).where(
    col(Outbox.message_id).in_(bindparam("ids", expanding=True)),
    col(Outbox.ticket_id).is_not(None),
)
_STORED = select(literal(1), Message.message_id, Message.ticket_id).where(
    col(Message.message_id).in_(bindparam("ids", expanding=True))
)
_BY_MESSAGE_ID: Any = union_all(_SENT, _STORED).execution_options(**AWARE)


def _tickets_by_message_ids(session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Message-ID -> ticket, for mail we stored or sent (and mail of this batch, still
    waiting in its buffer); what we sent wins."""
    ids = [i for i in dict.fromkeys(ids) if i][:50]
    if not ids:
        return {}
    rows = [(k, m, t) for k, m, t in session.exec(_BY_MESSAGE_ID, params={"ids": ids})]
    wanted = set(ids)
    buffer = pending(session)
    rows += [(0, r["message_id"], r["ticket_id"]) for r in buffer.waiting("outbox")
             if r["message_id"] in wanted and r["ticket_id"] is not None]
    rows += [(1, r["message_id"], r["ticket_id"]) for r in buffer.waiting("message")
             if r["message_id"] in wanted]
    found: dict[str, int] = {}
    for _, message_id, ticket_id in sorted(rows, key=lambda r: r[0]):
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
            loaded = load_ticket(session, current)
            found = loaded[0] if loaded else None
            ticket = _survivor(session, found)  # mail to a merged ticket goes to the survivor
            if ticket is None or found is None or loaded is None or ticket.id in seen:
                break
            state = loaded[1]
            if ticket is not found:
                label = f"{label}, merged into {format_tid(ticket.id or 0)}"
                state = ticket_state(session, ticket)
            seen.update({current, ticket.id or 0})
            out.append((state, label))
            label = f"{how} via linked {format_tid(ticket.id or 0)}"
            current = ticket.linked_to
    return out


def _survivor(session: Session, ticket: Ticket | None) -> Ticket | None:
    for _ in range(5):
        if ticket is None or ticket.merged_into is None:
            return ticket
        ticket = session.get(Ticket, ticket.merged_into)
    return ticket
