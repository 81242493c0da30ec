"""Mails into the outbox, in the caller's transaction: the intents of a decision are
capped (staff notifications per recipient, customer updates per ticket), rendered by
the pure core (maildesk.core.notify.build_mails) with what the database knows of the
thread, and written as outbox rows; admin alerts at most once an hour each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, literal, null, union_all
from sqlalchemy import select as sa_select
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
from maildesk.core.decide import Alert, MailIntent, TicketState
from maildesk.core.notify import build_mails
from maildesk.core.parse import InboundMail
from maildesk.core.tid import format_tid
from maildesk.storage.correspondence import public_history, updates_sent
from maildesk.storage.models import Message, Outbox
from maildesk.storage.pending import AWARE, add_event, pending


def queue_mails(
    session: Session,
    ticket: TicketState,
    mail: InboundMail,
    intents: tuple[MailIntent, ...],
    runtime: Runtime,
    now: datetime,
    rules_fired: tuple[str, ...] = (),
    stored_id: int | None = None,
    new_ticket: bool = False,
) -> None:
    """Render the intents and put them in the outbox, in the caller's transaction.
    Staff notifications are capped per recipient (maildesk.core.caps). `stored_id`: the
    message this mail was stored as (a held answer is kept there). `new_ticket`: opened
    by this mail (nothing about it is stored but what waits in the buffer)."""
    kept, notices, previous = _within_caps(session, ticket, intents, runtime, now, new_ticket)
    kept = _cap_updates(session, ticket.id, kept, runtime.limits.per_ticket, now)
    answer_to = last_customer_message_id(session, ticket.id) if any(
        i.template in ("answer", "update") for i in kept
    ) else None
    history = public_history(session, ticket.id, ticket.requester_name or ticket.requester,
                             runtime.rules) if any(i.event == "resolved" for i in kept) else []
    built = build_mails(
        tuple(kept), ticket, mail, runtime.templates, runtime.rules, runtime.sla,
        runtime.sender, now, rules_fired, answer_to, previous,
        runtime.settings.notify_attach_bytes, history,
    )
    for intent, out in built:
        _queue_built(session, ticket.id, intent, out, stored_id, now)
    for rcpt, kind in notices:
        subject, lines = notice_lines(kind, format_tid(ticket.id), runtime.limits)
        out = operator_mail(runtime.settings.primary_address, (rcpt,), subject, lines, now)
        add_outbox(session, ticket.id, kind, out, now, wait=True)


def _within_caps(
    session: Session, ticket: TicketState, intents: tuple[MailIntent, ...],
    runtime: Runtime, now: datetime, new_ticket: bool,
) -> tuple[list[MailIntent], list[tuple[str, str]], dict[str, str]]:
    """The intents with each notification's recipients cut to those under their caps
    (an event names the rest), the cap notices now due, and the Message-ID of the last
    notification about this ticket to each staff member (a new one refers to it)."""
    notices: list[tuple[str, str]] = []
    kept: list[MailIntent] = []
    staff = sorted({r for i in intents if i.template == "notification" for r in i.recipients})
    recent, previous = _notified(session, staff, ticket.id, now, new_ticket)
    for intent in intents:
        if intent.template != "notification":
            kept.append(intent)
            continue
        result = cap_notifications(intent.recipients, recent, runtime.limits)
        if result.keep:
            kept.append(replace(intent, recipients=result.keep))
        notices.extend(result.notices)
        if result.held:
            add_event(session, ticket.id, now, "maildesk", "notify_capped",
                      "not mailed (cap reached): " + ", ".join(result.held))
    return kept, notices, previous


def _queue_built(
    session: Session, ticket_id: int, intent: MailIntent, out: OutgoingMail,
    stored_id: int | None, now: datetime,
) -> None:
    """One built mail into the outbox; what the customer gets is also kept as an
    outgoing message on the ticket, and a held answer remembers its stored message."""
    automatic = intent.template != "answer" and intent.reply is None
    add_outbox(session, ticket_id, intent.template, out, now, automatic, wait=True)
    if intent.template == "held" and stored_id is not None:
        kv_set(session, f"held:{out.message_id}"[:300], str(stored_id))
    if intent.template in ("confirmation", "answer", "update"):
        text = intent.reply.text if intent.reply else ""
        pending(session).add("message", {
            "ticket_id": ticket_id, "direction": "out",
            "kind": "answer" if intent.reply else intent.template,
            "message_id": out.message_id, "from_addr": intent.author or out.mail_from,
            "to_addrs": ", ".join(out.recipients),
            "subject": f"({intent.template} to {', '.join(out.recipients)})",
            "body_text": text, "created_at": now,
        }, intent.author or out.mail_from)


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
                add_event(session, ticket_id, now, "maildesk", "update_capped", detail)
                continue
            room -= 1
        kept.append(intent)
    return kept


_LAST_CUSTOMER = (
    select(Message.message_id)
    .where(
        Message.ticket_id == bindparam("ticket"),
        Message.direction == "in",
        Message.kind == "customer",
        col(Message.message_id).is_not(None),
    )
    .order_by(col(Message.id).desc())
    .limit(1)
    .execution_options(**AWARE)
)


def last_customer_message_id(session: Session, ticket_id: int) -> str | None:
    """The Message-ID of the customer's last mail on the ticket (waiting ones first)."""
    for row in reversed(pending(session).waiting("message")):
        if (row["ticket_id"] == ticket_id and row["direction"] == "in"
                and row["kind"] == "customer" and row["message_id"] is not None):
            return str(row["message_id"])
    found = session.exec(_LAST_CUSTOMER, params={"ticket": ticket_id}).first()
    return None if found is None else str(found)


def add_outbox(
    session: Session,
    ticket_id: int | None,
    kind: str,
    out: OutgoingMail,
    now: datetime,
    automatic: bool = True,
    *,
    wait: bool = False,
) -> None:
    """A mail into the outbox, in the caller's transaction (or SAVEPOINT) now; `wait`:
    in the batch's buffer (the flow of a mail), inserted with the batch's other mails."""
    rcpt = out.recipients[0] if out.recipients else ""
    pending(session).add("outbox", {
        "ticket_id": ticket_id, "kind": kind, "automatic": automatic,
        "mail_from": out.mail_from, "recipients": list(out.recipients), "rcpt": rcpt,
        "message_id": out.message_id, "raw": out.raw, "created_at": now,
        "next_attempt_at": now,
    }, rcpt)
    if not wait:
        pending(session).flush(session)


_KINDS = (NOTIFICATION, CAPPED_TICKET, CAPPED_HOUR)
_NOTIFIED: Any = union_all(
    # how many of each kind each recipient got within the hour, and how many of those
    # were about this ticket (the caps): a row per recipient and kind, however many
    # tickets they were about ...
    sa_select(literal(0), col(Outbox.rcpt), col(Outbox.kind), func.count(),
              func.sum(case((col(Outbox.ticket_id) == bindparam("ticket"), 1), else_=0)),
              null(), null())
    .where(
        col(Outbox.rcpt).in_(bindparam("rcpts", expanding=True)),
        col(Outbox.kind).in_(_KINDS),
        col(Outbox.created_at) >= bindparam("since"),
    )
    .group_by(col(Outbox.rcpt), col(Outbox.kind)),
    # ... and the notifications about this ticket they got (the last one is referred to)
    sa_select(literal(1), col(Outbox.rcpt), null(), null(), null(), col(Outbox.message_id),
              col(Outbox.id))
    .where(
        col(Outbox.ticket_id) == bindparam("ticket"),
        col(Outbox.kind) == NOTIFICATION,
        col(Outbox.rcpt).in_(bindparam("rcpts", expanding=True)),
    ),
).execution_options(**AWARE)


def _notified(
    session: Session, staff: Sequence[str], ticket_id: int, now: datetime, new_ticket: bool
) -> tuple[Recent, dict[str, str]]:
    """For the staff a mail notifies (one query, or what `prefetch_notified` read for a
    new ticket, and what the transaction added): the notifications and cap notices each
    got within the hour (maildesk.core.caps), and the Message-ID of the last
    notification about this ticket to each."""
    if not staff:
        return Recent({}, {}, frozenset()), {}
    since = now - timedelta(hours=1)
    counts: list[tuple[str, str, int, int]] = []  # (rcpt, kind, in all, about this ticket)
    previous: list[tuple[tuple[int, int], str, str]] = []  # (stored 0 / added 1, order)
    wanted = set(staff)
    known = _known_notified(session, wanted, now) if new_ticket else None
    if known is not None:
        stored, added = known
        counts.extend((rcpt, kind, n, 0) for rcpt, kind, n in stored if rcpt in wanted)
    else:
        added = pending(session).waiting("outbox")
        for tag, rcpt, kind, count, on_ticket, message_id, outbox_id in session.exec(
            _NOTIFIED, params={"rcpts": list(staff), "since": since,
                               "ticket": -1 if new_ticket else ticket_id}
        ):
            if tag == 0:
                counts.append((rcpt, kind, int(count), int(on_ticket or 0)))
            else:
                previous.append(((0, int(outbox_id)), rcpt, message_id))
    for row in added:
        if row["rcpt"] in wanted and row["kind"] in _KINDS and row["created_at"] >= since:
            counts.append((row["rcpt"], row["kind"], 1, int(row["ticket_id"] == ticket_id)))
        if row["rcpt"] in wanted and row["kind"] == NOTIFICATION and row["ticket_id"] == ticket_id:
            previous.append(((1, len(previous)), row["rcpt"], row["message_id"]))
    previous.sort(key=lambda r: r[0])  # stored by id, then added: the last one wins
    return _recent(counts), {rcpt: mid for _, rcpt, mid in previous}


@dataclass(frozen=True)
class _Notified:
    now: datetime
    rcpts: frozenset[str]
    counts: tuple[tuple[str, str, int], ...]  # (rcpt, kind, stored within the hour)


_PREFETCHED = "maildesk_notified"
_NOTIFIED_ALL: Any = (
    sa_select(col(Outbox.rcpt), col(Outbox.kind), func.count())
    .where(
        col(Outbox.rcpt).in_(bindparam("rcpts", expanding=True)),
        col(Outbox.kind).in_(_KINDS),
        col(Outbox.created_at) >= bindparam("since"),
    )
    .group_by(col(Outbox.rcpt), col(Outbox.kind))
    .execution_options(**AWARE)
)


def prefetch_notified(session: Session, staff: Sequence[str], now: datetime) -> None:
    """Before a chunk's first mail (nothing written yet): how many notifications and cap
    notices each staff member got within the hour, in one statement. A new ticket's
    mail then adds what the transaction queued since, instead of asking again."""
    assert pending(session).empty(), "prefetch before the chunk writes anything"
    rows = session.exec(_NOTIFIED_ALL, params={"rcpts": sorted(set(staff)),
                                               "since": now - timedelta(hours=1)})
    session.info[_PREFETCHED] = _Notified(
        now, frozenset(staff), tuple((str(r), str(k), int(n)) for r, k, n in rows)
    )
    pending(session).log_outbox()


def _known_notified(
    session: Session, staff: set[str], now: datetime
) -> tuple[tuple[tuple[str, str, int], ...], list[dict[str, Any]]] | None:
    """What the prefetch read, and the outbox rows the transaction added since, if it
    still holds for these staff now."""
    known = session.info.get(_PREFETCHED)
    log = pending(session).outbox_log
    if not isinstance(known, _Notified) or known.now != now or not known.rcpts >= staff:
        return None
    return None if log is None else (known.counts, log)


def _recent(counts: Sequence[tuple[str, str, int, int]]) -> Recent:
    total: dict[str, int] = {}
    on_ticket: dict[str, int] = {}
    notices: set[tuple[str, str]] = set()
    for rcpt, kind, count, about_ticket in counts:
        if kind == NOTIFICATION:
            total[rcpt] = total.get(rcpt, 0) + count
            if about_ticket:
                on_ticket[rcpt] = on_ticket.get(rcpt, 0) + about_ticket
        elif kind == CAPPED_HOUR or about_ticket:
            notices.add((rcpt, kind))
    return Recent(total, on_ticket, frozenset(notices))


def queue_alerts(
    session: Session, alerts: tuple[Alert, ...], runtime: Runtime, now: datetime
) -> None:
    """Admin alerts, at most one per kind and address an hour (the KV row remembers)."""
    admins = tuple(m.email for m in runtime.rules.admins)
    for alert in alerts:
        kv_set(session, f"alert:{alert.kind}:{alert.address}"[:300], now.isoformat(),
               alert.address or "")
        to = alert.to or admins
        if to:
            out = operator_mail(runtime.settings.primary_address, to, alert.subject,
                                alert.lines, now)
            add_outbox(session, None, f"alert_{alert.kind}", out, now, wait=True)


def kv_set(session: Session, key: str, value: str, address: str = "") -> None:
    """Small state (upserted with the batch's buffer); `address`: whom it is about."""
    pending(session).set_kv(key, value, address)
