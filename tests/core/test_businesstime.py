"""Business-time arithmetic: hand cases, and properties against a minute-by-minute reference."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import takewhile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maildesk.core.businesstime import Calendar, check_day, parse_range

MOSCOW = ZoneInfo("Europe/Moscow")
ZONES = ("Europe/Moscow", "Europe/Berlin", "America/New_York")
OFFICE = tuple((parse_range("10:00-19:00"),) if i < 5 else () for i in range(7))
LUNCH = tuple(
    (parse_range("10:00-13:00"), parse_range("14:00-19:00")) if i < 5 else () for i in range(7)
)


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MOSCOW)  # type: ignore[misc]


# -- the reference: one minute at a time ------------------------------------------------


def ref_working(zone: ZoneInfo, week: tuple[tuple[tuple[int, int], ...], ...],
                off: frozenset[date], instant: datetime) -> bool:
    local = instant.astimezone(zone)
    minute = local.hour * 60 + local.minute
    return local.date() not in off and any(s <= minute < e for s, e in week[local.weekday()])


Week = tuple[tuple[tuple[int, int], ...], ...]


def ref_walk(zone: ZoneInfo, week: Week, off: frozenset[date], start: datetime
             ) -> Iterator[tuple[datetime, bool]]:
    """Each minute from `start` on, and whether it is working time."""
    at = start.astimezone(UTC)
    while True:
        yield at, ref_working(zone, week, off, at)
        at += timedelta(minutes=1)


def ref_add(zone: ZoneInfo, week: Week, off: frozenset[date], start: datetime,
            minutes: int) -> datetime:
    done = 0
    for at, working in ref_walk(zone, week, off, start):
        if done == minutes:
            return at
        done += working
    raise AssertionError("unreachable")


def ref_between(zone: ZoneInfo, week: Week, off: frozenset[date], a: datetime,
                b: datetime) -> int:
    return sum(w for _, w in takewhile(lambda m: m[0] < b, ref_walk(zone, week, off, a)))


# -- hand cases --------------------------------------------------------------------------


def test_friday_evening_plus_five_working_hours_is_monday_afternoon() -> None:
    office = Calendar(MOSCOW, OFFICE)
    due = office.add(msk(2026, 12, 4, 18, 30), 5 * 60)  # a Friday
    assert due == msk(2026, 12, 7, 14, 30) and due.weekday() == 0
    assert office.minutes_between(msk(2026, 12, 4, 18, 30), due) == 300


def test_a_holiday_monday_moves_it_to_tuesday() -> None:
    office = Calendar(MOSCOW, OFFICE, dates=frozenset({date(2026, 12, 7)}))
    assert office.add(msk(2026, 12, 4, 18, 30), 5 * 60) == msk(2026, 12, 8, 14, 30)


def test_country_holidays_come_from_the_holidays_package() -> None:
    russia = Calendar(MOSCOW, OFFICE, country="RU")
    # 31 Dec 2026 (a Thursday) is a day off by decree, then New Year holidays to 11 Jan.
    assert russia.add(msk(2026, 12, 30, 18, 0), 2 * 60) == msk(2027, 1, 11, 11, 0)
    assert russia.is_holiday(date(2026, 11, 4)) and not russia.is_holiday(date(2026, 11, 5))


def test_a_saturday_worked_by_decree_is_working_time() -> None:
    russia = Calendar(MOSCOW, OFFICE, country="RU")
    assert russia.is_working(msk(2025, 11, 1, 12, 0))  # Saturday swapped for 3 November
    assert not russia.is_working(msk(2025, 11, 3, 12, 0))


def test_round_the_clock() -> None:
    always = Calendar.always(MOSCOW)
    start = msk(2026, 12, 4, 18, 30)
    assert always.add(start, 60) == start + timedelta(hours=1)
    assert always.minutes_between(start, start + timedelta(days=3)) == 3 * 24 * 60


def test_round_the_clock_across_dst_counts_real_minutes() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 29, 1, 30, tzinfo=berlin)  # clocks jump 02:00 -> 03:00
    due = Calendar.always(berlin).add(start, 60)
    assert due == datetime(2026, 3, 29, 3, 30, tzinfo=berlin)


def test_a_start_inside_the_lunch_break_waits_for_the_afternoon() -> None:
    office = Calendar(MOSCOW, LUNCH)
    assert office.add(msk(2026, 12, 2, 13, 20), 30) == msk(2026, 12, 2, 14, 30)
    assert office.add(msk(2026, 12, 2, 12, 30), 60) == msk(2026, 12, 2, 14, 30)
    assert office.minutes_between(msk(2026, 12, 2, 12, 30), msk(2026, 12, 2, 14, 30)) == 60


def test_a_start_on_a_holiday_waits_for_the_next_working_day() -> None:
    russia = Calendar(MOSCOW, OFFICE, country="RU")
    assert russia.add(msk(2026, 11, 4, 11, 0), 60) == msk(2026, 11, 5, 11, 0)


def test_ending_at_closing_time_gives_closing_time_and_zero_is_the_start() -> None:
    office = Calendar(MOSCOW, OFFICE)
    assert office.add(msk(2026, 12, 2, 10, 0), 9 * 60) == msk(2026, 12, 2, 19, 0)
    start = msk(2026, 12, 5, 3, 0)  # a Saturday night
    assert office.add(start, 0) == start


def test_a_working_day_that_loses_an_hour_still_has_its_hours() -> None:
    new_york = ZoneInfo("America/New_York")
    night = Calendar(new_york, ((parse_range("00:00-24:00"),),) * 7)
    start = datetime(2026, 3, 8, 0, 0, tzinfo=new_york)
    assert night.minutes_between(start, start + timedelta(days=1)) == 23 * 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10:00", "looks like"),
        ("19:00-10:00", "must end after it starts"),
        ("10:00-25:00", "not a time of day"),
        ("10:61-11:00", "not a time of day"),
    ],
)
def test_bad_ranges_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_range(text)


def test_overlapping_ranges_are_an_error_and_touching_ones_merge() -> None:
    with pytest.raises(ValueError, match="overlap"):
        check_day([parse_range("10:00-13:00"), parse_range("12:00-19:00")])
    assert check_day([parse_range("13:00-19:00"), parse_range("10:00-13:00")]) == ((600, 1140),)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Calendar(MOSCOW, OFFICE).add(datetime(2026, 1, 1), 5)


# -- properties against the reference, around DST changes --------------------------------


@cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """Local days on which the zone's offset changes (Moscow: 2010-2014)."""
    zone, found = ZoneInfo(zone_name), []
    for year in (2010, 2011, 2014, 2025, 2026):
        day = datetime(year, 1, 1, 12, tzinfo=UTC)
        for _ in range(366):
            if day.astimezone(zone).utcoffset() != (day + timedelta(days=1)).astimezone(
                zone
            ).utcoffset():
                found.append(day)
            day += timedelta(days=1)
    return tuple(found)


BOUNDARIES = [0, 60, 90, 120, 150, 180, 210, 600, 780, 840, 1140, 1380, 1410, 1440]


@st.composite
def weeks(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], ...]:
    days = []
    for _ in range(7):
        cut = sorted(draw(st.sets(st.sampled_from(BOUNDARIES), max_size=4)))
        pairs = [(cut[i], cut[i + 1]) for i in range(0, len(cut) - 1, 2)]
        days.append(tuple(pairs))
    if not any(days):
        days[draw(st.integers(0, 6))] = ((600, 1140),)
    return tuple(days)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Calendar, datetime, frozenset[date]]:
    zone_name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    near = draw(st.sampled_from(transitions(zone_name)))
    start = near + timedelta(minutes=draw(st.integers(-3 * 1440, 2 * 1440)))
    week = draw(weeks())
    off = frozenset(
        start.astimezone(zone).date() + timedelta(days=d)
        for d in draw(st.sets(st.integers(-1, 5), max_size=3))
    )
    return Calendar(zone, week, dates=off), start, off


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(cases(), st.integers(0, 1500))
def test_add_matches_the_minute_by_minute_reference(
    case: tuple[Calendar, datetime, frozenset[date]], minutes: int
) -> None:
    calendar, start, off = case
    weekly = sum(e - s for day in calendar.week for s, e in day)
    minutes = min(minutes, 2 * weekly)  # sparse weeks would make the reference crawl
    due = calendar.add(start, minutes)
    assert due == ref_add(calendar.zone, calendar.week, off, start, minutes)
    assert calendar.minutes_between(start, due) == minutes


@PROPERTY
@given(cases(), st.integers(0, 6 * 1440))
def test_minutes_between_matches_the_minute_by_minute_reference(
    case: tuple[Calendar, datetime, frozenset[date]], span: int
) -> None:
    calendar, start, off = case
    end = start + timedelta(minutes=span)
    expected = ref_between(calendar.zone, calendar.week, off, start, end)
    assert calendar.minutes_between(start, end) == expected
    assert calendar.minutes_between(end, start) == -expected
