"""What the pipeline reads before it decides (storage side): `load_facts` gathers, for
one mail, its thread (maildesk.storage.thread), the sender's recent history, the
assignment state, and a staff reply's collision, held answer and #merge targets.
Only reads; maildesk.storage.store writes the Decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, null
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.classify import Classification
from maildesk.core.commands import parse_commands
from maildesk.core.decide import (
    SenderFacts,
    TicketState,
    Workload,
)
from maildesk.core.decision import NO_SENDER_FACTS, NO_WORKLOAD, Collision, Facts, HeldAnswer
from maildesk.core.identity import Identity
from maildesk.core.parse import InboundMail
from maildesk.core.rules import RulesConfig, evaluate
from maildesk.storage.models import (
    KV,
    Message,
    Outbox,
    Suppression,
    Ticket,
)
from maildesk.storage.models import Attachment as AttachmentRow
from maildesk.storage.pending import AWARE, pending
from maildesk.storage.prefetch import known_sender
from maildesk.storage.thread import lookup_thread
from maildesk.storage.tickets import OPEN_STATUSES, ticket_state

_DUPLICATE = select(Message.ticket_id).where(
    Message.dedupe_key == bindparam("key")
).execution_options(**AWARE)


def is_duplicate(session: Session, dedupe_key: str) -> int | None:
    """The ticket that already holds this mail, if any (invariant 2)."""
    for row in pending(session).waiting("message"):
        if row["dedupe_key"] == dedupe_key:
            return int(row["ticket_id"])
    found = session.exec(_DUPLICATE, params={"key": dedupe_key}).first()
    return None if found is None else int(found)


def kv_get(session: Session, key: str) -> str | None:
    """Small state, as the batch left it (waiting upserts first)."""
    buffer = pending(session)
    if key in buffer.kv or key in buffer.kv_known:
        return buffer.kv.get(key, buffer.kv_known.get(key))
    found = session.exec(_KV_VALUE, params={"key": key}).first()
    value = None if found is None else str(found)
    buffer.kv_known[key] = value
    return value


_KV_VALUE = select(KV.value).where(KV.key == bindparam("key")).execution_options(**AWARE)


def stored_dedupe_keys(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """Which of these dedupe keys are stored already, and on which ticket (one query)."""
    if not keys:
        return {}
    rows = session.exec(
        select(Message.dedupe_key, Message.ticket_id).where(col(Message.dedupe_key).in_(keys))
    ).all()
    return {str(key): int(ticket) for key, ticket in rows if key is not None}


def _sender_query(same_body: bool) -> Any:
    """Everything the guards read about a sender, in one statement; each part is a
    lookup in an index bounded by the sender's last hour (migration 0005)."""
    address: Any = bindparam("address")
    hour_ago: Any = bindparam("hour_ago")
    mine = (Ticket.requester == address, col(Ticket.created_at) >= hour_ago)
    same_query: Any = null()
    if same_body:
        same_query = (
            select(Message.ticket_id)
            .where(
                Message.from_addr == address,
                Message.body_hash == bindparam("same_body"),
                col(Message.created_at) >= hour_ago,
            )
            .limit(1)
            .scalar_subquery()
        )
    return sa_select(  # sqlmodel's select() takes at most four columns
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
        select(KV.value).where(KV.key == bindparam("alert_key")).scalar_subquery(),
    ).execution_options(**AWARE)


_SENDER = {same: _sender_query(same) for same in (False, True)}


def sender_facts(
    session: Session,
    address: str,
    now: datetime,
    same_body: str | None = None,
    storms: bool = True,
    storm_limit: int | None = None,
) -> SenderFacts:
    """What the guards need to know about a sender: prefetched for the chunk
    (maildesk.storage.prefetch), or in one
    statement (after a flush of the batch's buffer only if a mail of the batch wrote
    about this sender). The latest ticket is read only when the storm guard can use it
    (at `storm_limit` tickets)."""
    hour_ago = now - timedelta(hours=1)
    live = bool(address) and storms
    buffer = pending(session)
    row = known_sender(session, address, now, same_body)
    if row is None:
        if address in buffer.addresses:
            buffer.flush(session)
        params = {"address": address, "hour_ago": hour_ago, "same_body": same_body,
                  "alert_key": f"alert:storm:{address}"[:300]}
        row = tuple(session.exec(_SENDER[live and same_body is not None], params=params).one())
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
        value = kv_get(session, f"alert:{kind}:{address}"[:300])
        if value is not None and datetime.fromisoformat(value) > now - timedelta(hours=1):
            found.add(kind)
    return frozenset(found)


def workload(session: Session, rules: RulesConfig, group: str | None) -> Workload:
    """What assigning a new ticket to `group` needs: its round-robin pointer (one key;
    read once a batch: the batch's buffer knows it from then on), and for a
    least_open group its members' open tickets, counted from (assignee, status) alone."""
    if group is None or group not in rules.groups:
        return Workload(open_counts={}, last_assigned={})
    pointer = kv_get(session, f"rr:{group}")
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
        open_counts=counts, last_assigned={group: pointer} if pointer else {}
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
        value = kv_get(session, f"held:{mid}"[:300])
        held = session.get(Message, int(value)) if value is not None else None
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


def load_facts(
    session: Session,
    mail: InboundMail,
    kind: Classification,
    identity: Identity,
    envelope_to: Sequence[str],
    runtime: Runtime,
    now: datetime,
    live: bool,
) -> Facts:
    """Everything `decide` needs from the database for this mail. The sender's history
    and the workload are read only for a mail that may open a ticket; the storm guards
    count the last hour of live mail (an import of old mail is no storm)."""
    thread = lookup_thread(session, mail, kind, identity, envelope_to, runtime.hmac_key)
    sender, work = NO_SENDER_FACTS, NO_WORKLOAD
    if thread.ticket is None and kind.kind != "bounce":
        sender = sender_facts(
            session, mail.from_addr, now, mail.body_hash if live else None, storms=live,
            storm_limit=runtime.settings.new_tickets_per_sender_per_hour,
        )
        # Only the group the rules pick is asked for its pointer or its members' load.
        work = workload(session, runtime.rules, evaluate(runtime.rules, mail).group)
    if identity.is_staff and thread.ticket is not None:
        collision, held = staff_reply_facts(
            session, thread.ticket.id, mail, identity.address, runtime.settings.data_dir
        )
        # The tickets its #merge lines name, read by the same parser that applies them.
        named = parse_commands(mail.text, runtime.rules, runtime.sla.levels,
                               identity.address, now).commands
        targets = merge_targets(session, [c.ticket for c in named if c.ticket])
        sender = replace(sender, collision=collision, held=held, merge_targets=targets)
    if identity.spoof:
        alerted = recent_alerts(session, {"spoof": identity.spoof}, now)
        sender = replace(sender, alerted=sender.alerted | alerted)
    return Facts(kind, identity, thread, sender, work)
