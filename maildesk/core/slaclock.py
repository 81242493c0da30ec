"""The SLA clocks of one ticket, in the working time of its level's calendar. Pure.

Three targets run on a ticket:
- first_response: from creation until the first public staff answer;
- next_response: from each customer reply after that until the next public answer;
- resolution: from creation (with `clock_from: last_customer_reply`, from the latest
  customer reply) until the ticket is resolved.
While the status is one of the level's `pause_when` (answered, pending), or resolved or
closed, the clocks stand still; when the ticket runs again every due time still ahead
moves on by the working minutes it stood still, so what was left is left.

Before and after each due time the level asks for mails: a warning `warn_before` it,
then the escalation steps (`after` the due time: the first is the breach). `plan` lists
them with their times; each is keyed by target, due time and kind, so it is sent once
(maildesk.work.slascan claims the key) even when the scan runs twice or on two daemons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from maildesk.core.businesstime import Calendar
from maildesk.core.sla import Level

Target = Literal["first_response", "next_response", "resolution"]
TARGETS: tuple[Target, ...] = ("first_response", "next_response", "resolution")
STOPPED = frozenset({"resolved", "closed", "spam"})
Notify = Literal["assignee", "group_lead", "admins"]


@dataclass(frozen=True)
class Clocks:
    """What a ticket stores: each target's due and warning time, and the pause."""

    first_response_due: datetime | None = None
    first_response_warn: datetime | None = None
    next_response_due: datetime | None = None
    next_response_warn: datetime | None = None
    resolution_due: datetime | None = None
    resolution_warn: datetime | None = None
    paused_at: datetime | None = None

    def due(self, target: Target) -> datetime | None:
        value: datetime | None = getattr(self, f"{target}_due")
        return value

    def warn(self, target: Target) -> datetime | None:
        value: datetime | None = getattr(self, f"{target}_warn")
        return value


@dataclass(frozen=True)
class Step:
    key: str  # target:due:kind, unique per ticket
    target: Target
    kind: str  # warn, breach, escalation1, ...
    due: datetime  # the deadline it is about
    at: datetime  # when it is sent
    notify: Notify
    template: str


def _deadline(
    calendar: Calendar, start: datetime, minutes: int | None, warn: int | None
) -> tuple[datetime | None, datetime | None]:
    if minutes is None:
        return None, None
    due = calendar.add(start, minutes)
    warned = calendar.add(start, minutes - warn) if warn and warn < minutes else None
    return due, warned


def start(level: Level, calendar: Calendar, created: datetime) -> Clocks:
    """A new ticket: the first-response and resolution clocks run from its creation."""
    first, first_warn = _deadline(
        calendar, created, level.first_response_minutes, level.warn_before
    )
    resolution, resolution_warn = _deadline(
        calendar, created, level.resolution_minutes, level.warn_before
    )
    return Clocks(
        first_response_due=first,
        first_response_warn=first_warn,
        resolution_due=resolution,
        resolution_warn=resolution_warn,
    )


def customer_replied(
    clocks: Clocks, level: Level, calendar: Calendar, answered_before: bool, now: datetime
) -> Clocks:
    """A customer's reply: a next answer is due (once they had a first one); with
    `clock_from: last_customer_reply` the resolution clock starts again."""
    if answered_before:
        due, warn = _deadline(calendar, now, level.next_response, level.warn_before)
        clocks = replace(clocks, next_response_due=due, next_response_warn=warn)
    if level.clock_from == "last_customer_reply":
        due, warn = _deadline(calendar, now, level.resolution_minutes, level.warn_before)
        clocks = replace(clocks, resolution_due=due, resolution_warn=warn)
    return clocks


def staff_answered(clocks: Clocks) -> Clocks:
    """A public staff answer meets the next-response target (first_response_at, stored on
    the ticket, meets the first)."""
    return replace(clocks, next_response_due=None, next_response_warn=None)


def status_changed(
    clocks: Clocks, level: Level, calendar: Calendar, status: str, now: datetime
) -> Clocks:
    """Pause on a `pause_when` status (and on resolved/closed); run again otherwise."""
    stands = status in level.pause_when or status in STOPPED
    if stands and clocks.paused_at is None:
        return replace(clocks, paused_at=now)
    if not stands and clocks.paused_at is not None:
        return resume(clocks, calendar, now)
    return clocks


def resume(clocks: Clocks, calendar: Calendar, now: datetime) -> Clocks:
    """Every due and warning time still ahead at the pause moves on by the working
    minutes the ticket stood still."""
    paused_at = clocks.paused_at
    if paused_at is None:
        return clocks
    stood = calendar.minutes_between(paused_at, now)
    moved: dict[str, datetime | None] = {}
    for target in TARGETS:
        for name in (f"{target}_due", f"{target}_warn"):
            value: datetime | None = getattr(clocks, name)
            moved[name] = calendar.add(value, stood) if value and value > paused_at else value
    return replace(clocks, paused_at=None, **moved)


def relevel(
    level: Level, calendar: Calendar, created: datetime, last_customer: datetime | None,
    answered_before: bool, paused_at: datetime | None,
) -> Clocks:
    """A new level (#sla): its targets, counted from where the old ones counted."""
    clocks = replace(start(level, calendar, created), paused_at=paused_at)
    if last_customer is not None and last_customer > created:
        clocks = customer_replied(clocks, level, calendar, answered_before, last_customer)
    return clocks


def plan(
    clocks: Clocks,
    level: Level,
    calendar: Calendar,
    status: str,
    first_response_given: bool,
) -> list[Step]:
    """Every mail the running targets ask for, with the time it goes out, in time order.
    Nothing while the clocks stand still."""
    if clocks.paused_at is not None or status in STOPPED:
        return []
    steps: list[Step] = []
    for target in TARGETS:
        due = clocks.due(target)
        if due is None or (target == "first_response" and first_response_given):
            continue
        stamp = f"{target}:{due.strftime('%Y%m%dT%H%MZ')}"
        warn = clocks.warn(target)
        if warn is not None and warn < due:
            steps.append(Step(f"{stamp}:warn", target, "warn", due, warn, "assignee",
                              "sla_warning"))
        escalation = level.escalation or ()
        if not escalation:
            steps.append(Step(f"{stamp}:breach", target, "breach", due, due, "assignee",
                              "sla_breach"))
        for i, step in enumerate(escalation):
            kind = "breach" if i == 0 else f"escalation{i}"
            steps.append(Step(f"{stamp}:{kind}", target, kind, due,
                              calendar.add(due, step.after), step.notify, step.template))
    return sorted(steps, key=lambda s: s.at)


def next_at(steps: list[Step], after: datetime | None = None) -> datetime | None:
    """When the scan must look at the ticket again: the first step after `after`
    (None: the first step at all, even one already past)."""
    times = [s.at for s in steps if after is None or s.at > after]
    return min(times) if times else None
