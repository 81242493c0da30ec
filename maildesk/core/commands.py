"""Staff `#commands`: the lines at the top of a staff mail that start with `#`. Pure.

`parse_commands(text, roster, levels, now)` splits a mail's text into the commands
at its top and the rest (what a customer may see), checking every line against the
roster, groups and SLA levels. If any line is invalid the whole mail must take no
effect: the caller tells the author which line and why (`Parsed.errors`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from maildesk.core.address import parse_addresses
from maildesk.core.rules import RulesConfig
from maildesk.core.tid import parse_tid

PRIORITIES = ("low", "normal", "high", "urgent")
_DURATION_RE = re.compile(r"^(?:(\d{1,3})h)?\s*(?:(\d{1,4})m)?$", re.IGNORECASE)
_SIMPLE = {"close", "resolve", "reopen", "internal", "spam", "ham", "send"}


@dataclass(frozen=True)
class Command:
    name: str  # close, resolve, reopen, wait, assign, group, co, priority, category, sla,
    # internal, spam, ham, time, canned, merge, cc, new-for, send
    value: str | None = None  # the checked argument: a staff address, a group, a level, ...
    minutes: int | None = None  # #time
    until: datetime | None = None  # #wait until
    ticket: int | None = None  # #merge
    add: bool = True  # #cc add / remove
    line: str = ""  # as written, for events and error mails


@dataclass(frozen=True)
class Parsed:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]  # "line: why", one per invalid line
    body: str  # the text without the command lines


def first_line(text: str) -> str:
    """The mail's first non-blank line, stripped (`#send`, `#new-for` are read there)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def parse_commands(
    text: str, roster: RulesConfig, levels: Iterable[str], author: str, now: datetime
) -> Parsed:
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    errors: list[str] = []
    rest = 0
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#") or line.startswith("##"):
            break
        rest = i + 1
        try:
            commands.append(_one(line, roster, frozenset(levels), author, now))
        except ValueError as exc:
            errors.append(f"{line}: {exc}")
    return Parsed(tuple(commands), tuple(errors), "\n".join(lines[rest:]).strip("\n"))


def _one(
    line: str, roster: RulesConfig, levels: frozenset[str], author: str, now: datetime
) -> Command:
    word, _, arg = line[1:].partition(" ")
    name, arg = word.lower(), arg.strip()
    if name in _SIMPLE:
        if arg:
            raise ValueError(f"#{name} takes no argument")
        return Command(name, line=line)
    if name in ("assign", "co"):
        return Command(name, value=_staff(arg, roster, author), line=line)
    if name == "group":
        return Command(name, value=_choice(arg, roster.groups, "group"), line=line)
    if name == "priority":
        return Command(name, value=_choice(arg.lower(), PRIORITIES, "priority"), line=line)
    if name == "sla":
        return Command(name, value=_choice(arg, sorted(levels), "SLA level"), line=line)
    if name in ("category", "canned"):
        if not re.fullmatch(r"[\w.-]{1,100}", arg):
            raise ValueError(f"#{name} needs a name (letters, digits, . _ -)")
        return Command(name, value=arg, line=line)
    if name == "time":
        return Command(name, minutes=_minutes(arg), line=line)
    if name == "wait":
        return Command(name, until=_until(arg, now), line=line)
    if name == "merge":
        number = parse_tid(arg)
        if number is None:
            raise ValueError("#merge needs a ticket, e.g. #merge MD-12")
        return Command(name, ticket=number, line=line)
    if name == "cc":
        how, _, address = arg.partition(" ")
        if how.lower() not in ("add", "remove") or not address.strip():
            raise ValueError("use #cc add ADDRESS or #cc remove ADDRESS")
        return Command(name, value=_address(address), add=how.lower() == "add", line=line)
    if name == "new-for":
        return Command(name, value=_address(arg) if arg else None, line=line)
    known = sorted([*_SIMPLE, "assign", "co", "group", "priority", "sla", "category", "canned",
                    "time", "wait", "merge", "cc", "new-for"])
    return _unknown(name, known)


def _unknown(name: str, known: list[str]) -> Command:
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean #{near[0]}?" if near else ""
    raise ValueError(f"unknown command #{name}{hint}")


def _staff(arg: str, roster: RulesConfig, author: str) -> str:
    wanted = arg.strip().lower()
    if wanted == "me":
        return author
    for member in roster.staff:
        if wanted in (member.email, member.name.lower()):
            return member.email
    names = [m.name.lower() for m in roster.staff] + [m.email for m in roster.staff]
    near = difflib.get_close_matches(wanted, names, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise ValueError(f"no staff member {arg!r}{hint}")


def _address(arg: str) -> str:
    """One usable address, parsed as a header would be (never split by hand)."""
    parsed = parse_addresses("address", [arg.strip()])
    if len(parsed.addresses) != 1 or parsed.problems:
        why = "; ".join(parsed.problems) or "expected exactly one address"
        raise ValueError(f"not a usable address: {why}")
    return parsed.addresses[0][1]


def _choice(arg: str, allowed: Iterable[str], what: str) -> str:
    options = list(allowed)
    if arg in options:
        return arg
    near = difflib.get_close_matches(arg, options, n=1)
    hint = f"; did you mean {near[0]}?" if near else f" (one of: {', '.join(options)})"
    raise ValueError(f"unknown {what} {arg!r}{hint}")


def _minutes(arg: str) -> int:
    found = _DURATION_RE.match(arg.replace(" ", ""))
    if not arg or not found or not (found.group(1) or found.group(2)):
        raise ValueError("#time needs a duration like 15m, 1h or 1h30m")
    return int(found.group(1) or 0) * 60 + int(found.group(2) or 0)


def _until(arg: str, now: datetime) -> datetime | None:
    if not arg:
        return None
    text = arg.removeprefix("until").strip()
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d", "%d.%m.%Y %H:%M", "%d.%m.%Y"):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if fmt in ("%Y-%m-%d", "%d.%m.%Y"):
            parsed = datetime.combine(parsed.date(), time(9, 0))
        when = parsed.replace(tzinfo=now.tzinfo)
        if when <= now:
            raise ValueError("#wait until a date in the future")
        if when > now + timedelta(days=366):
            raise ValueError("#wait until at most a year ahead")
        return when
    raise ValueError("use #wait until YYYY-MM-DD [HH:MM] (or DD.MM.YYYY)")
