"""Business time: working hours in a time zone, minus holidays (pure: no IO, no clock).

A `Calendar` answers two questions exactly, to the microsecond:

- `add(start, minutes)`: the earliest instant by which `minutes` of working time have
  passed since `start` (an SLA due time);
- `minutes_between(a, b)`: how many whole working minutes lie in [a, b).

An instant is working time when its local wall-clock time in the calendar's zone falls
in one of the ranges of its local weekday and its local date is not a holiday. Across a
DST change that is exactly what a clock on the office wall says: a 10:00-19:00 day that
loses an hour at 02:00 still has nine working hours; a range through 02:00-03:00 on the
night the clocks go forward is an hour shorter, and on the night they go back an hour
longer.

The arithmetic walks day by day over working intervals (never minute by minute), in
integer microseconds since the epoch. Each local day's intervals are computed once per
calendar and cached, and the `holidays` package is asked once per country and year.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import holidays as holidays_lib

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
US_PER_MINUTE = 60_000_000
_US_PER_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far a walk may go without meeting any working time before it gives up.
_MAX_IDLE_DAYS = 3 * 366

Range = tuple[int, int]  # [start, end) in minutes after local midnight; end may be 1440
Interval = tuple[int, int]  # [start, end) in microseconds since the epoch


class NoWorkingTime(ValueError):
    """The calendar has no working time within years of the start."""


def parse_range(text: str) -> Range:
    """'10:00-13:00' -> (600, 780). '24:00' is allowed as an end. ValueError says why."""
    start_text, sep, end_text = text.strip().partition("-")
    if not sep:
        raise ValueError(f"{text!r}: a time range looks like '10:00-19:00'")
    start, end = _clock(start_text, text), _clock(end_text, text)
    if end == 0 and start > 0:
        end = DAY_MINUTES  # "22:00-00:00" means until midnight
    if start >= DAY_MINUTES or end <= start:
        raise ValueError(f"{text!r}: the range must end after it starts, within one day")
    return start, end


def _clock(part: str, whole: str) -> int:
    hours, sep, minutes = part.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{whole!r}: a time range looks like '10:00-19:00'")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > DAY_MINUTES:
        raise ValueError(f"{whole!r}: {part.strip()} is not a time of day")
    return value


def check_day(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges of one weekday; overlapping ranges are an error, touching ones merge."""
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if merged and start < merged[-1][1]:
            raise ValueError(
                f"ranges {_hhmm(merged[-1][0])}-{_hhmm(merged[-1][1])} and "
                f"{_hhmm(start)}-{_hhmm(end)} overlap"
            )
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@functools.lru_cache(maxsize=512)
def country_holidays(country: str, subdiv: str | None, year: int) -> tuple[frozenset[date],
                                                                          frozenset[date]]:
    """(days off, weekend days worked by decree) of one country and year, from `holidays`."""
    table = holidays_lib.country_holidays(country, subdiv=subdiv, years=year)
    return frozenset(table), frozenset(getattr(table, "weekend_workdays", ()))


@dataclass(frozen=True, eq=False)
class Calendar:
    """Weekly working hours in an IANA time zone, minus holidays.

    `week[i]` are the ranges of weekday i (0 = Monday). `dates` are explicit days off;
    `country`/`subdiv` add the public holidays the `holidays` package knows, and its
    weekend days worked by decree (a Saturday swapped for a bridge day), which then get
    the hours of the first weekday that has any.
    """

    zone: ZoneInfo
    week: tuple[tuple[Range, ...], ...]
    dates: frozenset[date] = frozenset()
    country: str | None = None
    subdiv: str | None = None
    _days: dict[date, tuple[Interval, ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a week has seven days")
        object.__setattr__(self, "week", tuple(check_day(day) for day in self.week))
        if not any(self.week):
            raise ValueError("a calendar needs some working hours")

    @classmethod
    def always(cls, zone: ZoneInfo, dates: frozenset[date] = frozenset(),
               country: str | None = None, subdiv: str | None = None) -> Calendar:
        """Round the clock (24/7), minus any holidays given."""
        return cls(zone, (((0, DAY_MINUTES),),) * 7, dates, country, subdiv)

    @property
    def round_the_clock(self) -> bool:
        return (all(day == ((0, DAY_MINUTES),) for day in self.week)
                and not self.dates and self.country is None)

    # -- public arithmetic ----------------------------------------------------------

    def add(self, start: datetime, minutes: int) -> datetime:
        """The due time: the earliest instant with `minutes` of working time after `start`.

        Zero returns `start`. Ending exactly at the close of a working range gives that
        close (19:00), not the next opening. The result is in UTC: a datetime in a zone's
        repeated hour never compares equal to one in another zone (PEP 495), so local
        times are for display only.
        """
        if minutes < 0:
            raise ValueError("minutes must not be negative")
        at = _micros(start)
        if minutes == 0:
            return start.astimezone(UTC)
        if self.round_the_clock:
            return _datetime(at + minutes * US_PER_MINUTE, UTC)
        remaining = minutes * US_PER_MINUTE
        for begin, end in self._chronological(self._local_date(at) - timedelta(days=1), start):
            if end <= at:
                continue
            begin = max(begin, at)
            if end - begin >= remaining:
                return _datetime(begin + remaining, UTC)
            remaining -= end - begin
        raise AssertionError("unreachable: the walk is endless")

    def minutes_between(self, a: datetime, b: datetime) -> int:
        """Whole working minutes in [a, b); negative when b is before a."""
        start, end = _micros(a), _micros(b)
        if end < start:
            return -self.minutes_between(b, a)
        if self.round_the_clock:
            return (end - start) // US_PER_MINUTE
        total = 0
        day = self._local_date(start) - timedelta(days=1)
        last = self._local_date(end) + timedelta(days=1)
        while day <= last:
            for begin, finish in self.intervals(day):
                overlap = min(finish, end) - max(begin, start)
                if overlap > 0:
                    total += overlap
            day += timedelta(days=1)
        return total // US_PER_MINUTE

    def is_working(self, instant: datetime) -> bool:
        at = _micros(instant)
        return any(b <= at < e for b, e in self.intervals(self._local_date(at)))

    def _chronological(self, day: date, start: datetime) -> Iterator[Interval]:
        """Working intervals from local date `day` on, in time order.

        Dates are nearly in time order: only where the clocks go back over midnight do
        the repeated hour's instants (of the earlier date) come after the first hour of
        the later date. So each date's intervals are merged with the next date's before
        they are given out; two dates apart never interleave.
        """
        carry: list[tuple[Interval, int]] = [(iv, 0) for iv in self.intervals(day)]
        idle = 0
        while True:
            day += timedelta(days=1)
            fresh = self.intervals(day)
            items = sorted(carry + [(iv, 1) for iv in fresh])
            upto = max((i + 1 for i, (_, later) in enumerate(items) if not later), default=0)
            for interval, _ in items[:upto]:
                yield interval
            carry = [(iv, 0) for iv, _ in items[upto:]]
            idle = 0 if fresh else idle + 1
            if idle > _MAX_IDLE_DAYS:
                raise NoWorkingTime(f"no working time within {_MAX_IDLE_DAYS} days of {start}")

    def is_holiday(self, day: date) -> bool:
        if day in self.dates:
            return True
        if self.country is None:
            return False
        return day in country_holidays(self.country, self.subdiv, day.year)[0]

    def ranges_on(self, day: date) -> tuple[Range, ...]:
        """The working ranges of a local date: its weekday's, none on a holiday."""
        if self.is_holiday(day):
            return ()
        ranges = self.week[day.weekday()]
        if not ranges and self.country is not None and day in country_holidays(
            self.country, self.subdiv, day.year
        )[1]:
            return next(r for r in self.week if r)
        return ranges

    # -- one local day as instants ----------------------------------------------------

    def intervals(self, day: date) -> tuple[Interval, ...]:
        """The instants of `day` whose local time is in a working range (cached)."""
        cached = self._days.get(day)
        if cached is None:
            cached = self._compute(day)
            if len(self._days) > 20_000:
                self._days.clear()
            self._days[day] = cached
        return cached

    def _compute(self, day: date) -> tuple[Interval, ...]:
        ranges = self.ranges_on(day)
        if not ranges:
            return ()
        midnight = datetime.combine(day, time()).replace(tzinfo=UTC)
        local_midnight = _micros(midnight)  # the local midnight read as if it were UTC
        # Offsets are constant between transitions; a window of two days around the
        # local day holds at most one transition in every real zone.
        lo = local_midnight - 26 * 3600 * _US_PER_SECOND
        hi = local_midnight + 50 * 3600 * _US_PER_SECOND
        pieces = self._pieces(lo, hi)
        out: list[Interval] = []
        for begin, end in ranges:
            for p_lo, p_hi, offset in pieces:
                # In this piece, local = instant + offset.
                a = max(local_midnight + begin * US_PER_MINUTE - offset, p_lo)
                b = min(local_midnight + end * US_PER_MINUTE - offset, p_hi)
                if a < b:
                    out.append((a, b))
        out.sort()
        merged: list[Interval] = []
        for a, b in out:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return tuple(merged)

    def _pieces(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """[lo, hi) split where the zone's UTC offset changes: (start, end, offset µs)."""
        first, last = self._offset(lo), self._offset(hi)
        if first == last:
            return [(lo, hi, first)]
        a, b = lo, hi  # offset(a) == first, offset(b) != first: find the change
        while b - a > _US_PER_SECOND:
            mid = a + (b - a) // 2 // _US_PER_SECOND * _US_PER_SECOND
            if mid <= a:
                mid = a + _US_PER_SECOND
            if self._offset(mid) == first:
                a = mid
            else:
                b = mid
        return [(lo, b, first), (b, hi, self._offset(b))]

    def _offset(self, micros: int) -> int:
        offset = _datetime(micros, self.zone).utcoffset()
        assert offset is not None
        return offset // timedelta(microseconds=1)

    def _local_date(self, micros: int) -> date:
        return _datetime(micros, self.zone).date()


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment}: a time zone is needed (naive datetime)")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _datetime(micros: int, zone: tzinfo) -> datetime:
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)
