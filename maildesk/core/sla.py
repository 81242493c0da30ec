"""sla.yaml: calendars, SLA levels, reminders, and which senders get which level (pure).

Targets are amounts of working time in a level's calendar (`maildesk.core.businesstime`);
a level without a calendar counts round the clock in UTC (wall-clock time), which is
also what the legacy `first_response_hours` / `resolution_hours` fields meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from maildesk.core.businesstime import Calendar, Range, check_day, parse_range
from maildesk.core.parse import InboundMail

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?")


def parse_duration(value: object) -> int:
    """'24h', '90m', '1h30m' -> minutes. Anything else is a ValueError saying the form."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or not value or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration; write it like 24h, 90m or 1h30m")
    hours, minutes = match.groups()
    return int(hours or 0) * 60 + int(minutes or 0)


def format_duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{rest}m" if rest or not hours else "")


def _time_range(value: object) -> Range:
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: a time range is a string like '10:00-19:00'")
    return parse_range(value)


Duration = Annotated[int, BeforeValidator(parse_duration)]  # minutes
PositiveDuration = Annotated[int, BeforeValidator(parse_duration), Field(gt=0)]
DayHours = Annotated[list[Annotated[Range, BeforeValidator(_time_range)]],
                     AfterValidator(lambda ranges: list(check_day(ranges)))]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UTC_ROUND_THE_CLOCK = Calendar.always(ZoneInfo("UTC"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaySpec(_Strict):
    country: str | None = None  # ISO 3166 code the `holidays` package knows, e.g. RU
    subdiv: str | None = None
    dates: tuple[date, ...] = ()

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in holidays_lib.list_supported_countries():
            raise ValueError(
                f"unknown holiday country {value!r}; use a country code the holidays "
                "package knows, e.g. RU, DE, US"
            )
        return value.upper() if value else value

    @model_validator(mode="after")
    def _known_subdiv(self) -> HolidaySpec:
        if self.subdiv is None:
            return self
        if self.country is None:
            raise ValueError("holidays.subdiv needs holidays.country")
        known = holidays_lib.list_supported_countries()[self.country]
        if self.subdiv not in known:
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ValueError(
                f"unknown subdivision {self.subdiv!r} of {self.country}; "
                f"known: {listed or 'none'}"
            )
        return self


class CalendarSpec(_Strict):
    timezone: str
    # How the confirmation names the zone, per language: {en: Moscow time,
    # ru: по московскому времени}. Default: the UTC offset.
    title: dict[str, str] = Field(default_factory=dict)
    hours: dict[Weekday, DayHours] | None = None
    always: bool = False  # round the clock, every day (24/7)
    holidays: HolidaySpec = Field(default_factory=HolidaySpec)
    _calendar: Calendar = PrivateAttr()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/Moscow"
            ) from None
        return value

    @model_validator(mode="after")
    def _build(self) -> CalendarSpec:
        if self.always == (self.hours is not None):
            raise ValueError("a calendar has either hours or always: true")
        zone = ZoneInfo(self.timezone)
        if self.always:
            week = Calendar.always(zone).week
        else:
            assert self.hours is not None
            week = tuple(tuple(self.hours.get(day) or ()) for day in DAYS)
            if not any(week):
                raise ValueError("hours has no working time on any day")
        self._calendar = Calendar(
            zone, week, frozenset(self.holidays.dates), self.holidays.country,
            self.holidays.subdiv,
        )
        return self

    @property
    def calendar(self) -> Calendar:
        return self._calendar


class EscalationStep(_Strict):
    after: Duration  # after the breach
    notify: Literal["assignee", "group_lead", "admins"]
    template: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class Level(_Strict):
    title: dict[str, str] = Field(default_factory=dict)  # per language, e.g. {en: Standard}
    calendar: str | None = None  # a name under `calendars`; none: round the clock, UTC
    first_response: PositiveDuration | None = None
    next_response: PositiveDuration | None = None  # after each customer reply
    resolution: PositiveDuration | None = None
    clock_from: Literal["created", "last_customer_reply"] = "created"
    pause_when: tuple[Literal["answered", "pending"], ...] = ("answered", "pending")
    warn_before: Duration | None = None
    escalation: tuple[EscalationStep, ...] = ()
    # Before business time: wall-clock hours. Still read; `first_response: 24h` replaces it.
    first_response_hours: float | None = Field(default=None, gt=0)
    resolution_hours: float | None = Field(default=None, gt=0)

    @field_validator("escalation")
    @classmethod
    def _in_order(cls, steps: tuple[EscalationStep, ...]) -> tuple[EscalationStep, ...]:
        afters = [s.after for s in steps]
        if afters != sorted(afters):
            raise ValueError("escalation steps must be in the order of their `after`")
        return steps

    @field_validator("pause_when")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a status is named twice")
        return value

    @model_validator(mode="after")
    def _targets(self) -> Level:
        if self.first_response is None and self.first_response_hours is None:
            raise ValueError("first_response is missing; write it like 24h, 90m or 1h30m")
        if self.first_response is not None and self.first_response_hours is not None:
            raise ValueError("give first_response or the older first_response_hours, not both")
        if self.resolution is not None and self.resolution_hours is not None:
            raise ValueError("give resolution or resolution_hours, not both")
        if self.warn_before is not None and self.warn_before >= self.first_response_minutes:
            raise ValueError(
                f"warn_before ({format_duration(self.warn_before)}) must be shorter than "
                f"first_response ({format_duration(self.first_response_minutes)})"
            )
        return self

    @property
    def first_response_minutes(self) -> int:
        if self.first_response is not None:
            return self.first_response
        assert self.first_response_hours is not None
        return round(self.first_response_hours * 60)

    @property
    def resolution_minutes(self) -> int | None:
        if self.resolution_hours is not None:
            return round(self.resolution_hours * 60)
        return self.resolution

    def display(self, name: str, language: str) -> str:
        return self.title.get(language) or self.title.get("en") or name


class SenderLevel(_Strict):
    level: str
    from_address: tuple[str, ...] = ()
    from_domain: tuple[str, ...] = ()

    @field_validator("from_address", "from_domain", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Unassigned(_Strict):
    """Remind about tickets without an assignee: one digest every `every`."""

    every: PositiveDuration = 5
    notify: Literal["admins"] | tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")], ...] = (
        "admins"
    )


class Pending(_Strict):
    return_after: PositiveDuration | None = None  # a postponed ticket without a date


class AutoClose(_Strict):
    after_days: int = Field(ge=1)


_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DOMAIN_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}")


def _address(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _ADDRESS.fullmatch(text):
        raise ValueError(f"{value!r} is not a mail address like ann@example.com")
    return text


def _domain(value: object) -> str:
    text = value.strip().lower().lstrip("@") if isinstance(value, str) else ""
    if len(text) > 253 or not DOMAIN_RE.fullmatch(text):
        raise ValueError(f"{value!r} is not a domain like example.com")
    return text


Address = Annotated[str, BeforeValidator(_address)]
Domain = Annotated[str, BeforeValidator(_domain)]


class ClientGroup(_Strict):
    """A client organisation for the monthly report: who belongs to it, who gets it."""

    title: str | None = None
    domains: tuple[Domain, ...] = ()  # subdomains included
    addresses: tuple[Address, ...] = ()
    contacts: tuple[Address, ...] = ()  # the monthly report goes to them
    language: Literal["en", "ru"] | None = None  # of that mail; default MAILDESK_LANGUAGE
    level: str | None = None  # the SLA level its people get (after `senders`)

    @model_validator(mode="after")
    def _members(self) -> ClientGroup:
        if not self.domains and not self.addresses:
            raise ValueError("a client needs domains or addresses")
        return self


@dataclass(frozen=True)
class DueTimes:
    """What a ticket created at `created` on a level is promised (aware, UTC)."""

    created: datetime
    first_response: datetime
    first_response_warn: datetime | None
    resolution: datetime | None
    resolution_warn: datetime | None


def _builtin_levels() -> dict[str, Level]:
    standard = {"title": {"en": "Standard", "ru": "Стандартный"}, "first_response": "24h"}
    return {"standard": Level.model_validate(standard)}


class SlaConfig(_Strict):
    calendars: dict[str, CalendarSpec] = Field(default_factory=dict)
    levels: dict[str, Level] = Field(default_factory=_builtin_levels)
    default_level: str = "standard"
    senders: tuple[SenderLevel, ...] = ()
    unassigned: Unassigned = Field(default_factory=Unassigned)
    pending: Pending = Field(default_factory=Pending)
    auto_close: AutoClose | None = None
    clients: dict[str, ClientGroup] = Field(default_factory=dict)

    def cross_check(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Names used must be defined: (location in the YAML, problem)."""
        used: list[tuple[tuple[str | int, ...], str]] = [
            (("default_level",), self.default_level),
            *((("senders", i, "level"), s.level) for i, s in enumerate(self.senders)),
            *((("clients", n, "level"), c.level) for n, c in self.clients.items() if c.level),
        ]
        defined = ", ".join(self.levels) or "none"
        problems = [
            (loc, f"unknown SLA level {name!r}; defined: {defined}")
            for loc, name in used
            if name not in self.levels
        ]
        calendars = ", ".join(self.calendars) or "none"
        problems.extend(
            (("levels", name, "calendar"), f"unknown calendar {level.calendar!r}; "
             f"defined: {calendars}")
            for name, level in self.levels.items()
            if level.calendar is not None and level.calendar not in self.calendars
        )
        problems.extend(self._client_overlaps())
        return problems

    def _client_overlaps(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A domain or address may belong to one client only."""
        owner: dict[tuple[str, str], str] = {}
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for name, group in self.clients.items():
            for field, values in (("domains", group.domains), ("addresses", group.addresses)):
                for i, value in enumerate(values):
                    first = owner.setdefault((field, value), name)
                    if first != name:
                        problems.append(((("clients", name, field, i)),
                                         f"{value} already belongs to client {first!r}"))
        return problems

    def client_of(self, address: str) -> str:
        """The client an address belongs to: a group under `clients` (by address, then
        by domain or a parent domain), else the address's domain (the organisation)."""
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        for name, group in self.clients.items():
            if address in group.addresses:
                return name
        for name, group in self.clients.items():
            if any(domain == d or domain.endswith("." + d) for d in group.domains):
                return name
        return domain

    def level_for(self, mail: InboundMail, rule_level: str | None = None) -> str:
        """The sender's registered level (`senders`, then their client group's `level`),
        else a rule's choice, else the default."""
        domain = mail.from_addr.rpartition("@")[2]
        for entry in self.senders:
            if mail.from_addr in {a.lower() for a in entry.from_address} or any(
                domain == d.lower() or domain.endswith("." + d.lower()) for d in entry.from_domain
            ):
                return entry.level
        client = self.clients.get(self.client_of(mail.from_addr))
        if client is not None and client.level:
            return client.level
        if rule_level in self.levels:
            return rule_level
        return self.default_level

    def calendar_spec(self, level: str) -> CalendarSpec | None:
        name = self.levels[level].calendar
        return self.calendars[name] if name is not None else None

    def calendar(self, level: str) -> Calendar:
        spec = self.calendar_spec(level)
        return spec.calendar if spec is not None else UTC_ROUND_THE_CLOCK

    def first_response_due(self, level: str, created: datetime) -> datetime:
        """In business time of the level's calendar; aware, UTC."""
        minutes = self.levels[level].first_response_minutes
        return self.calendar(level).add(created, minutes).astimezone(UTC)

    def due_times(self, level: str, created: datetime) -> DueTimes:
        spec, calendar = self.levels[level], self.calendar(level)

        def due(minutes: int | None, before: int = 0) -> datetime | None:
            if minutes is None:
                return None
            return calendar.add(created, max(minutes - before, 0)).astimezone(UTC)

        first, resolution = spec.first_response_minutes, spec.resolution_minutes
        warn = spec.warn_before
        return DueTimes(
            created=created.astimezone(UTC),
            first_response=self.first_response_due(level, created),
            first_response_warn=due(first, warn) if warn is not None else None,
            resolution=due(resolution),
            resolution_warn=due(resolution, warn) if warn is not None else None,
        )
