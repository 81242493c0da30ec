"""What a chunk's new tickets will ask, read once before its first mail instead of once
per mail (maildesk.work.processor calls `prefetch_chunk`): the senders' last hour (for
maildesk.storage.facts.sender_facts), the staff's notification counts (for
maildesk.storage.enqueue), and how many ticket ids to take at once
(maildesk.storage.store.new_ticket_id). What the transaction writes afterwards about
an address (`Pending.touched`) makes its prefetched facts stale; those are read afresh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, bindparam, cast, func, literal, null, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from maildesk.core.parse import InboundMail
from maildesk.core.tid import find_tids
from maildesk.storage.enqueue import prefetch_notified
from maildesk.storage.models import KV, Message, Outbox, Suppression, Ticket
from maildesk.storage.pending import AWARE, pending


@dataclass(frozen=True)
class _Sender:
    """The parts of a sender's facts one query reads for a whole chunk."""

    confirmations: int = 0
    until: datetime | None = None
    new_tickets: int = 0
    latest_id: int | None = None
    alerted_at: str | None = None


@dataclass
class _Known:
    """What `prefetch_senders` read, as of `now`: per address, and the first ticket of
    each (address, body hash) within the hour."""

    now: datetime
    senders: dict[str, _Sender]
    same_body: dict[tuple[str, str], int]


_PREFETCHED = "maildesk_senders"
_TS = Ticket.__table__.c.created_at.type  # type: ignore[attr-defined]


def _prefetch_query() -> Any:
    """The parts of maildesk.storage.facts._sender_query for many addresses, in one
    statement: a row per (part, address); the ts/id/text columns carry what that part
    reads."""
    addrs: Any = bindparam("addrs", expanding=True)
    hour_ago: Any = bindparam("hour_ago")
    none_ts, none_id, none_text = (cast(null(), t) for t in (_TS, Integer(), String()))
    return union_all(
        sa_select(literal(0), col(Outbox.rcpt), func.count(), none_ts, none_id, none_text)
        .where(col(Outbox.rcpt).in_(addrs), col(Outbox.kind) == "confirmation",
               col(Outbox.created_at) >= hour_ago)
        .group_by(col(Outbox.rcpt)),
        sa_select(literal(1), col(Suppression.address), literal(0), col(Suppression.until),
                  none_id, none_text)
        .where(col(Suppression.address).in_(addrs)),
        sa_select(literal(2), col(Ticket.requester), func.count(), none_ts,
                  func.max(Ticket.id), none_text)
        .where(col(Ticket.requester).in_(addrs), col(Ticket.created_at) >= hour_ago)
        .group_by(col(Ticket.requester)),
        sa_select(literal(3), col(Message.from_addr), literal(0), col(Message.created_at),
                  col(Message.ticket_id), col(Message.body_hash))
        .where(col(Message.from_addr).in_(addrs),
               col(Message.body_hash).in_(bindparam("hashes", expanding=True)),
               col(Message.created_at) >= hour_ago),
        sa_select(literal(4), col(KV.key), literal(0), none_ts, none_id, col(KV.value))
        .where(col(KV.key).in_(bindparam("alert_keys", expanding=True))),
    ).execution_options(**AWARE)


_PREFETCH = _prefetch_query()


def prefetch_chunk(
    session: Session, mails: Sequence[InboundMail], staff: Sequence[str], now: datetime
) -> None:
    """Before a chunk's first mail, what its new tickets will ask, in two statements
    instead of two per mail: the senders' facts, and the notifications the staff got
    within the hour (maildesk.storage.enqueue); and how many ticket ids to take at once.
    A mail that looks like a reply (a TID in its subject, or a reference) is left out:
    it usually joins a ticket and never asks."""
    opening = [m for m in mails if not (m.in_reply_to or m.references or find_tids(m.subject))]
    if not opening:
        return
    pending(session).tickets_expected = len(opening)  # ids taken at once (store.new_ticket_id)
    prefetch_senders(session, opening, now)
    if staff:
        prefetch_notified(session, staff, now)


def prefetch_senders(session: Session, mails: Sequence[InboundMail], now: datetime) -> None:
    """Read the sender facts of these mails in one statement: `sender_facts` then uses
    them for every sender nobody in the transaction has written about yet (and reads
    afresh for the others)."""
    addresses = sorted({m.from_addr for m in mails if m.from_addr})
    if not addresses:
        return
    hashes = sorted({m.body_hash for m in mails if m.body_hash}) or [""]
    alert_keys = {f"alert:storm:{a}"[:300]: a for a in addresses}
    found: dict[str, dict[str, Any]] = {a: {} for a in addresses}
    firsts: dict[tuple[str, str], tuple[datetime, int]] = {}
    rows = session.exec(_PREFETCH, params={
        "addrs": addresses, "hour_ago": now - timedelta(hours=1), "hashes": hashes,
        "alert_keys": list(alert_keys),
    })
    for part, key, count, ts, ident, text in rows:
        if part == 0:
            found[key]["confirmations"] = int(count)
        elif part == 1:
            found[key]["until"] = ts
        elif part == 2:
            found[key].update(new_tickets=int(count), latest_id=ident)
        elif part == 3 and ident is not None:
            pair = (key, text)
            if pair not in firsts or (ts, ident) < firsts[pair]:
                firsts[pair] = (ts, ident)  # the earliest, as the index-ordered LIMIT 1
        elif part == 4 and key in alert_keys:
            found[alert_keys[key]]["alerted_at"] = text
    session.info[_PREFETCHED] = _Known(
        now, {a: _Sender(**parts) for a, parts in found.items()},
        {pair: ident for pair, (_ts, ident) in firsts.items()},
    )


def known_sender(
    session: Session, address: str, now: datetime, same_body: str | None
) -> tuple[int, datetime | None, int, int | None, int | None, str | None] | None:
    """The prefetched row `_SENDER` would return now, if it is still true."""
    known = session.info.get(_PREFETCHED)
    if not isinstance(known, _Known) or known.now != now:
        return None
    sender = known.senders.get(address)
    if sender is None or address in pending(session).touched:
        return None
    same = known.same_body.get((address, same_body)) if same_body is not None else None
    return (sender.confirmations, sender.until, sender.new_tickets, sender.latest_id, same,
            sender.alerted_at)
