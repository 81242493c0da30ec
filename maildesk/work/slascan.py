"""The scheduler's ticket jobs (APScheduler runs them on the daemon's loop, each in a
thread; each takes `now`, so tests drive them on a controllable clock):

- `scan_sla`: warnings, breaches and escalation steps that are due (maildesk.core.slaclock),
  each claimed once in `sla_step` (a unique key: restarts, clock jumps and two daemons
  on one PostgreSQL send it once), over the indexed `sla_next_at`;
- `digest_unassigned`: one mail listing every ticket without an assignee, and every
  ticket held as possible spam, to the dispatchers, at most once per `unassigned.every`;
- `return_pending`: postponed tickets whose date came (or, without a date, after
  `pending.return_after`) open again and their assignee is told;
- `auto_close`: resolved tickets with no customer reply for `auto_close.after_days` close;
- `monthly_client_reports`: from the 1st, last month's client reports (each once);
- `recompute_after_reload`: when sla.yaml's calendars or levels changed, the running
  tickets' due times are computed anew (once, by one daemon; an event on each).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from maildesk.config.runtime import Runtime
from maildesk.core import slaclock
from maildesk.core.alerts import operator_mail
from maildesk.core.compose import compose
from maildesk.core.notify import format_due
from maildesk.core.replytoken import reply_address
from maildesk.core.rules import RulesConfig
from maildesk.core.slaclock import Step
from maildesk.core.tid import format_tid, tagged_subject
from maildesk.storage.enqueue import add_outbox
from maildesk.storage.models import KV, Event, SlaStep, Ticket
from maildesk.storage.slastore import advance_clocks, clocks_of, level_of, write_clocks

log = logging.getLogger(__name__)

SCAN_LIMIT = 500  # tickets per scan; the rest wait for the next one (30 s)
LISTED = 200  # tickets named in one digest mail
WAITING = ("new", "open", "held")


def scan_sla(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """Send what is due; returns how many steps were sent."""
    now = now or datetime.now(UTC)
    with Session(engine) as session:
        tickets = session.exec(
            select(Ticket)
            .where(col(Ticket.sla_next_at) <= now)
            .order_by(col(Ticket.sla_next_at))
            .limit(SCAN_LIMIT)
            .with_for_update(skip_locked=True)
        ).all()
        due: list[tuple[Ticket, Step]] = []
        for ticket in tickets:
            level, calendar = level_of(runtime.sla, ticket)
            steps = slaclock.plan(clocks_of(ticket), level, calendar, ticket.status,
                                  ticket.first_response_at is not None)
            due.extend((ticket, step) for step in steps if step.at <= now)
            ticket.sla_next_at = slaclock.next_at(steps, after=now)
            session.add(ticket)
        claimed = _claim(session, due, runtime, now)
        for ticket, step in due:
            if (ticket.id, step.key) in claimed:
                _send(session, ticket, step, claimed[(ticket.id, step.key)], runtime, now)
        session.commit()
    return len(claimed)


def _claim(
    session: Session, due: list[tuple[Ticket, Step]], runtime: Runtime, now: datetime
) -> dict[tuple[int | None, str], tuple[str, ...]]:
    """One INSERT for every due step; the ones it really inserted are ours to send (a
    step sent before, by a restart or another daemon, is skipped by its unique key)."""
    if not due:
        return {}
    rows = []
    recipients: dict[tuple[int | None, str], tuple[str, ...]] = {}
    for ticket, step in due:
        who = _recipients(step.notify, ticket, runtime.rules)
        recipients[(ticket.id, step.key)] = who
        rows.append({"ticket_id": ticket.id, "step": step.key, "target": step.target,
                     "kind": step.kind, "due": step.due, "fired_at": now,
                     "recipients": ", ".join(who)})
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(SlaStep).values(rows)
        .on_conflict_do_nothing(index_elements=["ticket_id", "step"])
        .returning(col(SlaStep.ticket_id), col(SlaStep.step))
    )
    inserted = session.execute(statement).all()
    return {(t, k): recipients[(t, k)] for t, k in inserted}


def _send(
    session: Session, ticket: Ticket, step: Step, recipients: tuple[str, ...],
    runtime: Runtime, now: datetime,
) -> None:
    assert ticket.id is not None
    level, calendar = level_of(runtime.sla, ticket)
    overdue = calendar.minutes_between(step.due, now)
    context = {
        "tid": format_tid(ticket.id),
        "subject": ticket.subject,
        "customer_name": ticket.requester_name,
        "customer_email": ticket.requester,
        "target": step.target,
        "kind": step.kind,
        "assignee": ticket.assignee,
        "status": ticket.status,
        "priority": ticket.priority,
        "overdue": _duration(max(overdue, 0)),
        "left": _duration(max(-overdue, 0)),
    }
    for rcpt in recipients:
        member = runtime.rules.member(rcpt)
        language = member.languages[0] if member and member.languages else "en"
        body = runtime.templates.render(step.template, language, {
            **context,
            "sla_name": level.display(ticket.sla_level, language),
            "due": format_due(step.due, calendar.zone),
        })
        label = "SLA warning" if step.kind == "warn" else f"SLA {step.kind}"
        out = compose(
            from_addr=runtime.settings.primary_address,
            from_name=runtime.sender.name,
            to=(rcpt,),
            subject=f"[{label}] {tagged_subject(ticket.id, ticket.subject)}",
            body=body,
            now=now,
            reply_to=reply_address(runtime.settings.primary_address, ticket.id, rcpt,
                                   runtime.hmac_key),
            automatic=True,
        )
        add_outbox(session, ticket.id, f"sla_{step.kind}"[:20], out, now)
    session.add(Event(ticket_id=ticket.id, at=now, actor="maildesk", kind="sla",
                      detail=f"{step.target} {step.kind} (due {step.due:%Y-%m-%d %H:%M} UTC)"
                      f" to {', '.join(recipients) or 'nobody (no staff to tell)'}"))


def _recipients(notify: str, ticket: Ticket, rules: RulesConfig) -> tuple[str, ...]:
    admins = tuple(m.email for m in rules.admins)
    if notify == "assignee":
        return (ticket.assignee,) if ticket.assignee else admins
    if notify == "group_lead":
        group = rules.groups.get(ticket.assigned_group or "")
        return (group.lead.lower(),) if group is not None and group.lead else admins
    return admins


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{hours}h {rest:02d}m" if hours else f"{rest}m"


def digest_unassigned(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """One mail listing the tickets nobody has, and those held as possible spam; returns
    how many were listed (0: no mail). Claimed per period in the KV table."""
    now = now or datetime.now(UTC)
    every = timedelta(minutes=runtime.sla.unassigned.every)
    notify = runtime.sla.unassigned.notify
    to = tuple(m.email for m in runtime.rules.admins) if notify == "admins" else tuple(notify)
    with Session(engine) as session:
        tickets = session.exec(
            select(Ticket)
            .where(or_(
                col(Ticket.status) == "held",
                (col(Ticket.assignee).is_(None)) & (col(Ticket.status).in_(WAITING)),
            ))
            .order_by(col(Ticket.id))
            .limit(LISTED + 1)
        ).all()
        if not tickets or not to or not _claim_period(session, "digest:unassigned", every, now):
            session.rollback()
            return 0
        lines = [f"{len(tickets) if len(tickets) <= LISTED else f'over {LISTED}'} tickets "
                 "wait for someone:", ""]
        for t in tickets[:LISTED]:
            assert t.id is not None
            why = "held: possible spam, reply #ham or #spam" if t.status == "held" else (
                "no assignee")
            lines.append(f"{format_tid(t.id):>9}  {t.created_at:%Y-%m-%d %H:%M}  {why}: "
                         f"{t.subject[:60]} ({t.requester})")
        lines += ["", "Assign one: maildesk do MD-n '#assign NAME', or reply to its "
                  "notification with #assign NAME."]
        out = operator_mail(runtime.settings.primary_address, to,
                            f"maildesk: {min(len(tickets), LISTED)} tickets wait for someone",
                            lines, now)
        add_outbox(session, None, "digest", out, now)
        session.commit()
        return min(len(tickets), LISTED)


def _claim_period(session: Session, key: str, every: timedelta, now: datetime) -> bool:
    """True for the one caller per period (an UPDATE that only the first one matches)."""
    stamp = now.isoformat()
    if session.get(KV, key) is None:
        try:
            with session.begin_nested():
                session.add(KV(key=key, value=stamp))
            return True
        except IntegrityError:
            return False
    claimed = session.execute(
        update(KV).where(col(KV.key) == key, col(KV.value) <= (now - every).isoformat())
        .values(value=stamp)
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def return_pending(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """Postponed tickets whose time came: open again, clocks running, assignee told."""
    now = now or datetime.now(UTC)
    after = runtime.sla.pending.return_after
    due = col(Ticket.pending_until) <= now
    if after is not None:
        due = or_(due, col(Ticket.pending_until).is_(None)
                  & (col(Ticket.updated_at) <= now - timedelta(minutes=after)))
    with Session(engine) as session:
        tickets = session.exec(
            select(Ticket).where(Ticket.status == "pending", due).limit(SCAN_LIMIT)
            .with_for_update(skip_locked=True)
        ).all()
        for ticket in tickets:
            assert ticket.id is not None
            until = ticket.pending_until
            _set_status(session, ticket, "open", runtime, now,
                        f"pending -> open (postponed until "
                        f"{until:%Y-%m-%d %H:%M} UTC)" if until else
                        "pending -> open (pending.return_after passed)")
            ticket.pending_until = None
            to = (ticket.assignee,) if ticket.assignee else tuple(
                m.email for m in runtime.rules.admins)
            if to:
                out = operator_mail(runtime.settings.primary_address, to,
                                    f"[back] {tagged_subject(ticket.id, ticket.subject)}",
                                    [f"{format_tid(ticket.id)} was postponed; it is open "
                                     "again and its SLA clocks run."], now)
                add_outbox(session, ticket.id, "pending_return", out, now)
        session.commit()
        return len(tickets)


def auto_close(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """Resolved tickets without a customer reply for `auto_close.after_days` close."""
    now = now or datetime.now(UTC)
    if runtime.sla.auto_close is None:
        return 0
    days = runtime.sla.auto_close.after_days
    with Session(engine) as session:
        tickets = session.exec(
            select(Ticket).where(
                Ticket.status == "resolved",
                col(Ticket.resolved_at) <= now - timedelta(days=days),
            ).limit(SCAN_LIMIT).with_for_update(skip_locked=True)
        ).all()
        for ticket in tickets:
            ticket.closed_at = now
            _set_status(session, ticket, "closed", runtime, now,
                        f"resolved -> closed (no reply within {days} days)")
        session.commit()
        return len(tickets)


def _set_status(
    session: Session, ticket: Ticket, status: str, runtime: Runtime, now: datetime,
    detail: str,
) -> None:
    assert ticket.id is not None
    ticket.status, ticket.updated_at = status, now
    advance_clocks(ticket, runtime.sla, now, old_level=ticket.sla_level, customer_reply=False,
                   staff_answer=False, answered_before=ticket.first_response_at is not None)
    session.add(ticket)
    session.add(Event(ticket_id=ticket.id, at=now, actor="maildesk", kind="status",
                      detail=detail))


def monthly_client_reports(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """In the first week of a month: last month's reports, queued at most once each (the report's
    Message-ID is per month and recipients), so running it every scan is harmless."""
    from maildesk.work.client_report import queue_client_reports  # matplotlib: only when needed

    now = now or datetime.now(UTC)
    if now.day > 7:  # a daemon first started mid-month does not mail last month's report
        return 0
    first = now.replace(day=1)
    last_month = (first - timedelta(days=1)).strftime("%Y-%m")
    with Session(engine) as session:
        if not _claim_period(session, f"client-report:{last_month}", timedelta(days=40), now):
            session.rollback()
            return 0
        queued = queue_client_reports(session, runtime, last_month, now)
        session.commit()
        return queued


FINGERPRINT = "sla:fingerprint"
RECOMPUTE_BATCH = 1000


def sla_fingerprint(runtime: Runtime) -> str:
    """What due times depend on: the calendars and levels of sla.yaml."""
    sla = runtime.sla
    data = json.dumps({
        "calendars": {k: v.model_dump(mode="json") for k, v in sla.calendars.items()},
        "levels": {k: v.model_dump(mode="json") for k, v in sla.levels.items()},
        "default": sla.default_level,
    }, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def recompute_after_reload(engine: Engine, runtime: Runtime, now: datetime | None = None) -> int:
    """After a reload that changed the calendars or levels: every running ticket's due
    times from its creation (and latest customer reply) under the new ones. Claimed by
    a compare-and-set on the stored fingerprint, so one daemon does it; returns how
    many tickets changed. Time already stood still (pauses) is not counted again."""
    now = now or datetime.now(UTC)
    new = sla_fingerprint(runtime)
    with Session(engine) as session:
        stored = session.get(KV, FINGERPRINT)
        if stored is None:  # the first run: the due times were made with this config
            try:
                with session.begin_nested():
                    session.add(KV(key=FINGERPRINT, value=new))
                session.commit()
            except IntegrityError:
                session.rollback()
            return 0
        if stored.value == new:
            return 0
        claimed = session.execute(
            update(KV).where(col(KV.key) == FINGERPRINT, col(KV.value) == stored.value)
            .values(value=new)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            session.rollback()
            return 0
        changed = 0
        after = 0
        while True:
            tickets = session.exec(
                select(Ticket).where(col(Ticket.id) > after,
                                     col(Ticket.status).not_in(slaclock.STOPPED))
                .order_by(col(Ticket.id)).limit(RECOMPUTE_BATCH)
            ).all()
            if not tickets:
                break
            for ticket in tickets:
                assert ticket.id is not None
                after = ticket.id
                level, calendar = level_of(runtime.sla, ticket)
                clocks = slaclock.relevel(level, calendar, ticket.created_at,
                                          ticket.last_customer_at,
                                          ticket.first_response_at is not None,
                                          ticket.sla_paused_at)
                if clocks == clocks_of(ticket):
                    continue
                write_clocks(ticket, clocks, runtime.sla)
                session.add(ticket)
                session.add(Event(ticket_id=ticket.id, at=now, actor="maildesk", kind="sla",
                                  detail="due times computed anew: sla.yaml's calendars or "
                                  "levels changed"))
                changed += 1
            session.flush()
        session.commit()
        if changed:
            log.info("sla.yaml changed: due times of %d tickets computed anew", changed)
        return changed


# What the daemon's scheduler runs every MAILDESK_SLA_SCAN_SECONDS, in this order.
TICKET_JOBS = (recompute_after_reload, scan_sla, digest_unassigned, return_pending,
               auto_close, monthly_client_reports)
