"""`maildesk sla due` and `maildesk sla levels`: what sla.yaml promises, without a ticket."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from maildesk.cli.format import print_table
from maildesk.config.files import load_sla
from maildesk.config.settings import load_settings
from maildesk.core.sla import DAYS, CalendarSpec, SlaConfig, format_duration

sla_app = typer.Typer(help="SLA levels and due times.", no_args_is_help=True)
USAGE_ERROR = 2


def _fail(message: str) -> NoReturn:
    print(f"maildesk: {message}", file=sys.stderr)
    raise typer.Exit(USAGE_ERROR)


def _stamp(moment: datetime | None, zone: Any) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def describe_calendar(spec: CalendarSpec | None) -> str:
    """'mon-fri 10:00-19:00; holidays RU + 1 date', '24/7', or the built-in wall clock."""
    if spec is None:
        return "24/7 (UTC, wall clock)"
    if spec.always:
        hours = "24/7"
    else:
        assert spec.hours is not None
        runs: list[tuple[list[str], str]] = []
        for day in DAYS:
            ranges = ", ".join(
                f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}"
                for s, e in spec.hours.get(day) or ()
            )
            if runs and runs[-1][1] == ranges and runs[-1][0][-1] == DAYS[DAYS.index(day) - 1]:
                runs[-1][0].append(day)
            else:
                runs.append(([day], ranges))
        hours = "; ".join(
            (days[0] if len(days) == 1 else f"{days[0]}-{days[-1]}") + f" {ranges}"
            for days, ranges in runs
            if ranges
        )
    off, extra = spec.holidays, []
    if off.country:
        extra.append(off.country + (f"-{off.subdiv}" if off.subdiv else ""))
    if off.dates:
        extra.append(f"{len(off.dates)} date" + ("s" if len(off.dates) > 1 else ""))
    return hours + (f"; holidays {' + '.join(extra)}" if extra else "")


def _levels(sla: SlaConfig) -> list[dict[str, Any]]:
    rows = []
    for name, level in sla.levels.items():
        spec = sla.calendar_spec(name)
        rows.append({
            "level": name,
            "title": level.display(name, "en"),
            "default": name == sla.default_level,
            "calendar": level.calendar,
            "timezone": sla.calendar(name).zone.key,
            "hours": describe_calendar(spec),
            "first_response": format_duration(level.first_response_minutes),
            "next_response": _maybe(level.next_response),
            "resolution": _maybe(level.resolution_minutes),
            "clock_from": level.clock_from,
            "pause_when": list(level.pause_when),
            "warn_before": _maybe(level.warn_before),
            "escalation": [
                {"after": format_duration(s.after), "notify": s.notify, "template": s.template}
                for s in level.escalation
            ],
        })
    return rows


def _maybe(minutes: int | None) -> str | None:
    return format_duration(minutes) if minutes is not None else None


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@sla_app.command("levels")
def levels(as_json: JsonOpt = False) -> None:
    """The SLA levels with their calendars and targets (working time)."""
    rows = _levels(load_sla(load_settings().sla))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("level", "title", "calendar", "hours", "first response", "next response",
                  "resolution", "clock from", "warn before", "escalation")
    for r in rows:
        table.add_row(
            r["level"] + (" (default)" if r["default"] else ""),
            r["title"],
            f"{r['calendar'] or '-'} ({r['timezone']})",
            r["hours"],
            r["first_response"],
            r["next_response"] or "-",
            r["resolution"] or "-",
            r["clock_from"],
            r["warn_before"] or "-",
            ", ".join(f"+{s['after']} {s['notify']}" for s in r["escalation"]) or "-",
        )
    print_table(Console(), table)


@sla_app.command("due")
def due(
    level: Annotated[str, typer.Option("--level", help="An SLA level from sla.yaml.")],
    created: Annotated[
        str,
        typer.Option(
            "--created",
            help="When the ticket is created, ISO 8601 (2026-12-04T18:30, or with an offset: "
            "2026-12-04T18:30+03:00, ...Z). Without an offset: in the level's calendar zone.",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """The due times a ticket created at --created on --level would get."""
    sla = load_sla(load_settings().sla)
    if level not in sla.levels:
        _fail(f"--level {level}: unknown SLA level; defined: {', '.join(sla.levels)}")
    try:
        moment = datetime.fromisoformat(created.strip())
    except ValueError:
        _fail(f"--created {created!r}: not an ISO time like 2026-12-04T18:30 or "
              "2026-12-04T18:30+03:00")
    zone = sla.calendar(level).zone
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    times = sla.due_times(level, moment)
    rows = [
        ("created", times.created),
        ("first response warning", times.first_response_warn),
        ("first response due", times.first_response),
        ("resolution warning", times.resolution_warn),
        ("resolution due", times.resolution),
    ]
    if as_json:
        out: dict[str, Any] = {"level": level, "calendar": sla.levels[level].calendar,
                               "timezone": zone.key}
        for label, value in rows:
            out[label.replace(" ", "_")] = None if value is None else {
                "local": value.astimezone(zone).isoformat(),
                "utc": value.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    title = sla.levels[level].display(level, "en")
    print(f"level {level} ({title}), calendar {sla.levels[level].calendar or '-'}: "
          f"{describe_calendar(sla.calendar_spec(level))}")
    table = Table("", zone.key, "UTC")
    for label, value in rows:
        table.add_row(label, _stamp(value, zone), _stamp(value, UTC))
    print_table(Console(), table)
