"""sla.yaml: calendars and levels load, mistakes say file:line, due times in business time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from maildesk.config.files import load_sla, load_templates
from maildesk.core.parse import parse_mail
from maildesk.core.promise import promise_text
from maildesk.core.render import SAMPLE_CONTEXT
from maildesk.core.sla import parse_duration
from maildesk.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MOSCOW = ZoneInfo("Europe/Moscow")


def test_the_repository_example_loads_with_its_levels() -> None:
    sla = load_sla(REPO / "sla.yaml")
    assert list(sla.levels) == ["standard", "partner", "special"]
    assert sla.calendar("standard").zone.key == "Europe/Moscow"
    assert sla.levels["special"].first_response_minutes == 60
    assert [s.notify for s in sla.levels["standard"].escalation] == [
        "assignee", "group_lead", "admins"
    ]
    assert sla.unassigned.every == 5 and sla.unassigned.notify == "admins"
    assert sla.auto_close is not None and sla.auto_close.after_days == 7


def test_due_times_of_a_ticket_created_on_friday_evening() -> None:
    sla = load_sla(REPO / "sla.yaml")
    friday = datetime(2026, 12, 4, 18, 30, tzinfo=MOSCOW)
    due = sla.due_times("partner", friday)
    # Half an hour on Friday, the rest from Monday 10:00.
    assert due.first_response == datetime(2026, 12, 7, 13, 30, tzinfo=MOSCOW)
    assert due.first_response_warn == datetime(2026, 12, 7, 12, 30, tzinfo=MOSCOW)
    assert due.resolution == datetime(2026, 12, 9, 15, 30, tzinfo=MOSCOW)  # 0.5 + 9 + 9 + 5.5
    special = sla.due_times("special", friday)  # round the clock
    assert special.first_response == datetime(2026, 12, 4, 19, 30, tzinfo=MOSCOW)


@pytest.mark.parametrize(
    ("before", "after", "marker", "where", "message"),
    [
        ("calendar: round_the_clock", "calendar: nowhere", "calendar: nowhere",
         "levels.special.calendar", "unknown calendar 'nowhere'; defined: moscow, "
         "round_the_clock"),
        ('mon: ["10:00-19:00"]', 'mon: ["19:00-10:00"]', "mon:",
         "calendars.moscow.hours.mon.0", "'19:00-10:00': the range must end after it starts"),
        ('tue: ["10:00-19:00"]', 'tue: ["10:00-13:00", "12:00-19:00"]', "tue:",
         "calendars.moscow.hours.tue", "ranges 10:00-13:00 and 12:00-19:00 overlap"),
        ('wed: ["10:00-19:00"]', 'wed: ["10-19"]', "wed:",
         "calendars.moscow.hours.wed.0", "'10-19': a time range looks like '10:00-19:00'"),
        ('mon: ["10:00-19:00"]', 'monday: ["10:00-19:00"]', "monday:",
         "calendars.moscow.hours.monday.[key]", "Input should be 'mon'"),
        ("country: RU", "country: XX", "country: XX",
         "calendars.moscow.holidays.country", "unknown holiday country 'XX'"),
        ("country: RU,", "country: RU, subdiv: MOW,", "subdiv: MOW",
         "calendars.moscow.holidays", "unknown subdivision 'MOW' of RU"),
        ("timezone: Europe/Moscow\n    title", "timezone: Europe/Moskva\n    title",
         "Europe/Moskva", "calendars.moscow.timezone", "unknown time zone 'Europe/Moskva'"),
        ("    always: true", "    always: true\n    hours: {mon: ['10:00-19:00']}",
         "round_the_clock:", "calendars.round_the_clock",
         "a calendar has either hours or always: true"),
        ("first_response: 4h", "first_response: 4 hours", "4 hours",
         "levels.partner.first_response", "'4 hours' is not a duration; write it like 24h"),
        ("{after: 1h, notify: group_lead", "{after: 1h, notify: boss", "notify: boss",
         "levels.partner.escalation.1.notify", "Input should be 'assignee', 'group_lead'"),
        ("{after: 4h, notify: group_lead", "{after: 9h, notify: group_lead", "escalation:",
         "levels.standard.escalation", "escalation steps must be in the order"),
        ("warn_before: 15m", "warn_before: 2h", "special:",
         "levels.special", "warn_before (2h) must be shorter than first_response (1h)"),
        ("clock_from: created", "clock_from: creation", "clock_from: creation",
         "levels.standard.clock_from", "Input should be 'created' or 'last_customer_reply'"),
        ("pause_when: [answered, pending]", "pause_when: [answered, closed]", "pause_when",
         "levels.standard.pause_when.1", "Input should be 'answered' or 'pending'"),
        ("auto_close: {after_days: 7}", "auto_close: {after_days: 0}", "auto_close",
         "auto_close.after_days", "Input should be greater than or equal to 1"),
        ("unassigned: {every: 5m", "unassigned: {every: 0m", "unassigned",
         "unassigned.every", "Input should be greater than 0"),
    ],
)
def test_mistakes_are_reported_at_their_line(
    tmp_path: Path, before: str, after: str, marker: str, where: str, message: str
) -> None:
    text = (REPO / "sla.yaml").read_text()
    assert before in text
    path = tmp_path / "sla.yaml"
    path.write_text(text.replace(before, after, 1))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if marker in t)
    with pytest.raises(ConfigError) as caught:
        load_sla(path)
    expected = f"{path}:{line}: {where}: {message}"
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_the_older_wall_clock_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text("levels:\n  standard: {first_response_hours: 8, resolution_hours: 48}\n")
    sla = load_sla(path)
    created = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)  # a Saturday night: wall clock
    assert sla.first_response_due("standard", created) == datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    assert sla.due_times("standard", created).resolution == datetime(2026, 12, 7, 23, 0,
                                                                     tzinfo=UTC)
    path.write_text("levels:\n  standard: {first_response_hours: 8, first_response: 8h}\n")
    with pytest.raises(ConfigError, match=r"sla.yaml:2: levels.standard: give first_response"):
        load_sla(path)


@pytest.mark.parametrize(("text", "minutes"), [("24h", 1440), ("90m", 90), ("1h30m", 90),
                                               ("0m", 0)])
def test_durations(text: str, minutes: int) -> None:
    assert parse_duration(text) == minutes


@pytest.mark.parametrize("text", ["", "h", "24", "1d", "1.5h", "30m1h", 24])
def test_not_durations(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_the_confirmation_promises_a_time_in_the_customers_words() -> None:
    due = datetime(2026, 12, 7, 11, 30, tzinfo=UTC)  # Monday 14:30 in Moscow
    now = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
    title = {"en": "Moscow time", "ru": "по московскому времени"}
    en = promise_text(due, MOSCOW, title, "en", now)
    ru = promise_text(due, MOSCOW, title, "ru", now)
    assert en == "Monday, 7 December, 14:30 (Moscow time)"
    assert ru == "понедельника, 7 декабря, 14:30 (по московскому времени)"
    assert promise_text(due, MOSCOW, {}, "en", now).endswith("14:30 (UTC+03:00)")
    assert "2027" in promise_text(due.replace(year=2027), MOSCOW, title, "en", now)
    templates = load_templates(REPO / "templates")
    text = templates.render("confirmation", "en", {**SAMPLE_CONTEXT, "due": en}).text
    assert "You can expect our first answer by Monday, 7 December, 14:30 (Moscow time)." in text
    text = templates.render("confirmation", "ru", {**SAMPLE_CONTEXT, "due": ru}).text
    assert "Первый ответ ожидайте до понедельника, 7 декабря, 14:30 (по московскому времени)." \
        in text


def test_a_client_group_gives_its_people_a_level(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text(
        "levels:\n"
        "  standard: {first_response: 24h}\n"
        "  gold: {first_response: 2h}\n"
        "clients:\n"
        "  acme: {domains: [acme.example], level: gold}\n"
        "  other: {addresses: [x@other.example], level: platinum}\n"
    )
    with pytest.raises(ConfigError) as failed:
        load_sla(path)
    assert "clients.other.level: unknown SLA level 'platinum'" in str(failed.value)
    path.write_text(path.read_text().replace("platinum", "standard"))
    config = load_sla(path)
    ann = parse_mail(b"From: ann@mail.acme.example\r\nSubject: x\r\n\r\nhi\r\n")
    bea = parse_mail(b"From: bea@elsewhere.example\r\nSubject: x\r\n\r\nhi\r\n")
    assert config.level_for(ann) == "gold" and config.level_for(bea) == "standard"
