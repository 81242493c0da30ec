"""Reports over tickets: SLA compliance, overdue tickets, the monthly client report.

maildesk.storage.reports loads plain rows (`TicketFacts`); everything here is pure:
the aggregation takes the rows, the SLA config and `now`. Durations are working time in
the calendar of each ticket's level (`SlaConfig.calendar`), whole minutes.

Breaches are derived from the ticket's own times, not from the reminders sent:
- first response: the first public answer came after its due time; or none came and
  the due time has passed (by `now`, or by when the ticket was resolved or closed);
- resolution: resolved (or closed) after its due time; or not yet and it has passed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from maildesk.core.businesstime import Calendar
from maildesk.core.sla import UTC_ROUND_THE_CLOCK, SlaConfig
from maildesk.core.tid import format_tid
from maildesk.errors import MaildeskError

DONE_STATUSES = ("resolved", "closed")
NOT_OPEN = ("resolved", "closed", "spam")
DEFAULT_NEAR_MINUTES = 60  # "near its due time" for levels without warn_before
UNASSIGNED = "(unassigned)"


class ReportInputError(MaildeskError):
    """A --from, --to, --month or --client the report cannot use."""


@dataclass(frozen=True)
class TicketFacts:
    """One ticket as the reports see it (times aware, UTC)."""

    id: int
    subject: str
    status: str
    requester: str
    assignee: str | None
    sla_level: str
    priority: str
    created_at: datetime
    first_response_due: datetime | None = None
    first_response_at: datetime | None = None
    next_response_due: datetime | None = None
    resolution_due: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    sla_paused_at: datetime | None = None
    time_spent_minutes: int = 0
    rating: str | None = None
    reminders: int = 0  # sla_step rows: warnings, breach and escalation mails sent

    @property
    def tid(self) -> str:
        return format_tid(self.id)

    @property
    def done_at(self) -> datetime | None:
        """When the work ended: its resolution, else its closing; None while not done.
        (A ticket reopened and then closed without a new resolution keeps the old one.)"""
        if self.status not in DONE_STATUSES:
            return None
        return self.resolved_at or self.closed_at


# -- pure: statistics and breach rules ------------------------------------------------


def quantile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between the closest ranks (numpy's
    default, Excel's PERCENTILE.INC): the median of [1, 2, 3, 4] is 2.5. None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 1:
        raise ValueError("q is between 0 and 1")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _late(due: datetime | None, done: datetime | None, now: datetime) -> bool | None:
    """None when there is no target; else whether `done` (or, not done yet, `now`) is
    past `due`."""
    if due is None:
        return None
    return (done or now) > due


def first_response_breached(t: TicketFacts, now: datetime) -> bool | None:
    """Late first answer, or none and the due time passed (None: no target)."""
    return _late(t.first_response_due, t.first_response_at or t.done_at, now)


def resolution_breached(t: TicketFacts, now: datetime) -> bool | None:
    return _late(t.resolution_due, t.done_at, now)


def level_calendar(sla: SlaConfig, level: str) -> Calendar:
    """The level's calendar; a level no longer in sla.yaml counts round the clock."""
    return sla.calendar(level) if level in sla.levels else UTC_ROUND_THE_CLOCK


@dataclass(frozen=True)
class Measures:
    """One ticket's figures, computed once and grouped many times."""

    first_response: int | None  # working minutes from creation to the first answer
    first_response_breach: bool | None
    resolution: int | None  # working minutes from creation to resolution
    resolution_breach: bool | None


def measure(t: TicketFacts, calendar: Calendar, now: datetime) -> Measures:
    done = t.done_at
    return Measures(
        first_response=(calendar.minutes_between(t.created_at, t.first_response_at)
                        if t.first_response_at is not None else None),
        first_response_breach=first_response_breached(t, now),
        resolution=calendar.minutes_between(t.created_at, done) if done is not None else None,
        resolution_breach=resolution_breached(t, now),
    )


@dataclass(frozen=True)
class SlaRow:
    """One line of the SLA report: a level, a staff member, or everything (total)."""

    by: str  # level, assignee, total
    key: str
    tickets: int
    answered: int
    first_response_median: float | None  # working minutes
    first_response_p90: float | None
    first_response_breaches: int
    first_response_targets: int  # tickets with a first-response due time
    resolved: int
    resolution_median: float | None
    resolution_p90: float | None
    resolution_breaches: int
    resolution_targets: int
    good: int
    bad: int
    reminders: int

    def as_dict(self) -> dict[str, Any]:
        """Flat and JSON/CSV-ready: durations in working hours, shares 0..1."""
        return {
            "by": self.by,
            "key": self.key,
            "tickets": self.tickets,
            "answered": self.answered,
            "first_response_median_hours": _hours(self.first_response_median),
            "first_response_p90_hours": _hours(self.first_response_p90),
            "first_response_breaches": self.first_response_breaches,
            "first_response_breach_share": _share(self.first_response_breaches,
                                                  self.first_response_targets),
            "resolved": self.resolved,
            "resolution_median_hours": _hours(self.resolution_median),
            "resolution_p90_hours": _hours(self.resolution_p90),
            "resolution_breaches": self.resolution_breaches,
            "resolution_breach_share": _share(self.resolution_breaches, self.resolution_targets),
            "rated_good": self.good,
            "rated_bad": self.bad,
            "reminders_sent": self.reminders,
        }


SLA_COLUMNS = tuple(f.name for f in fields(SlaRow))


def _hours(minutes: float | None) -> float | None:
    return None if minutes is None else round(minutes / 60, 2)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _row(by: str, key: str, items: Sequence[tuple[TicketFacts, Measures]]) -> SlaRow:
    first = [m.first_response for _, m in items if m.first_response is not None]
    resolution = [m.resolution for _, m in items if m.resolution is not None]
    return SlaRow(
        by=by,
        key=key,
        tickets=len(items),
        answered=len(first),
        first_response_median=quantile(first, 0.5),
        first_response_p90=quantile(first, 0.9),
        first_response_breaches=sum(1 for _, m in items if m.first_response_breach),
        first_response_targets=sum(1 for _, m in items if m.first_response_breach is not None),
        resolved=len(resolution),
        resolution_median=quantile(resolution, 0.5),
        resolution_p90=quantile(resolution, 0.9),
        resolution_breaches=sum(1 for _, m in items if m.resolution_breach),
        resolution_targets=sum(1 for _, m in items if m.resolution_breach is not None),
        good=sum(1 for t, _ in items if t.rating == "good"),
        bad=sum(1 for t, _ in items if t.rating == "bad"),
        reminders=sum(t.reminders for t, _ in items),
    )


def sla_report(tickets: Sequence[TicketFacts], sla: SlaConfig, now: datetime) -> list[SlaRow]:
    """Per level (in sla.yaml's order), per assignee (unassigned last), and a total."""
    measured = [(t, measure(t, level_calendar(sla, t.sla_level), now)) for t in tickets]
    rows: list[SlaRow] = []
    order = {name: i for i, name in enumerate(sla.levels)}
    groupings: list[tuple[str, Callable[[TicketFacts], str], Callable[[str], tuple[Any, ...]]]] = [
        ("level", lambda t: t.sla_level, lambda k: (order.get(k, len(order)), k)),
        ("assignee", lambda t: t.assignee or UNASSIGNED, lambda k: (k == UNASSIGNED, k)),
    ]
    for by, key_of, sort_key in groupings:
        groups: dict[str, list[tuple[TicketFacts, Measures]]] = {}
        for item in measured:
            groups.setdefault(key_of(item[0]), []).append(item)
        rows.extend(_row(by, key, groups[key]) for key in sorted(groups, key=sort_key))
    rows.append(_row("total", "all", measured))
    return rows


# -- pure: overdue ---------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    target: str  # first_response, next_response, resolution
    due: datetime
    working_minutes: int  # left until due (> 0), or overdue by (< 0)


@dataclass(frozen=True)
class OverdueRow:
    ticket: TicketFacts
    deadlines: tuple[Deadline, ...]  # past or near, most urgent first

    def as_dict(self) -> dict[str, Any]:
        t = self.ticket
        return {
            "tid": t.tid, "subject": t.subject, "status": t.status, "priority": t.priority,
            "sla_level": t.sla_level, "assignee": t.assignee, "requester": t.requester,
            "deadlines": [
                {"target": d.target, "due": iso_utc(d.due), "overdue": d.working_minutes < 0,
                 "working_minutes": d.working_minutes}
                for d in self.deadlines
            ],
        }


def near_minutes(sla: SlaConfig, level: str) -> int:
    warn = sla.levels[level].warn_before if level in sla.levels else None
    return warn or DEFAULT_NEAR_MINUTES


def overdue_horizon(sla: SlaConfig, now: datetime) -> datetime:
    """No due time after this can be near for any level (a wall-clock bound for the query)."""
    ends = [level_calendar(sla, name).add(now, near_minutes(sla, name)) for name in sla.levels]
    return max([now + timedelta(minutes=DEFAULT_NEAR_MINUTES), *ends])


def _running_targets(t: TicketFacts, sla: SlaConfig) -> list[tuple[str, datetime]]:
    """The deadlines whose clock runs: none while the ticket's clock is paused."""
    level = sla.levels.get(t.sla_level)
    if t.sla_paused_at is not None or (level is not None and t.status in level.pause_when):
        return []
    found = [("next_response", t.next_response_due), ("resolution", t.resolution_due)]
    if t.first_response_at is None:
        found.insert(0, ("first_response", t.first_response_due))
    return [(target, due) for target, due in found if due is not None]


def overdue_report(
    tickets: Sequence[TicketFacts], sla: SlaConfig, now: datetime
) -> list[OverdueRow]:
    """Open tickets past or near (the level's warn_before, or 1 h of working time) any
    due time, the earliest due first."""
    rows: list[OverdueRow] = []
    for t in tickets:
        if t.status in NOT_OPEN:
            continue
        calendar = level_calendar(sla, t.sla_level)
        near = calendar.add(now, near_minutes(sla, t.sla_level))
        deadlines = sorted(
            (Deadline(target, due, calendar.minutes_between(now, due))
             for target, due in _running_targets(t, sla) if due <= near),
            key=lambda d: d.due,
        )
        if deadlines:
            rows.append(OverdueRow(t, tuple(deadlines)))
    rows.sort(key=lambda r: (r.deadlines[0].due, r.ticket.id))
    return rows


# -- pure: windows ---------------------------------------------------------------------


def report_zone(sla: SlaConfig) -> ZoneInfo:
    """Dates and months are days of the default level's calendar (the support team's)."""
    return level_calendar(sla, sla.default_level).zone


def parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ReportInputError(f"{option} {value!r}: not a date like 2026-11-30") from None


def day_window(
    start: str | None, end: str | None, zone: ZoneInfo, now: datetime
) -> tuple[datetime, datetime]:
    """[--from 00:00, the day after --to 00:00) in `zone`; default: the last 30 days."""
    upper = (_midnight(parse_day(end, "--to") + timedelta(days=1), zone) if end is not None
             else now)
    lower = (_midnight(parse_day(start, "--from"), zone) if start is not None
             else upper - timedelta(days=30))
    if lower >= upper:
        raise ReportInputError(f"--from {start or lower.date()} is after --to "
                               f"{end or upper.date()}")
    return lower, upper


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def previous_month(now: datetime, zone: ZoneInfo) -> str:
    first = now.astimezone(zone).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def month_window(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    match = _MONTH.fullmatch(month.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise ReportInputError(f"--month {month!r}: not a month like 2026-11")
    year, number = int(match.group(1)), int(match.group(2))
    following = date(year + number // 12, number % 12 + 1, 1)
    return _midnight(date(year, number, 1), zone), _midnight(following, zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def iso_utc(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- queries ---------------------------------------------------------------------------

