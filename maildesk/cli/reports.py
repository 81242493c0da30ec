"""`maildesk report sla|overdue|client`: what the tickets say, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlmodel import Session

from maildesk.cli.format import print_table, when
from maildesk.config.files import load_sla
from maildesk.config.settings import Settings, load_settings
from maildesk.core.reports import (
    OverdueRow,
    ReportInputError,
    SlaRow,
    day_window,
    month_window,
    overdue_horizon,
    overdue_report,
    previous_month,
    report_zone,
    sla_report,
)
from maildesk.core.sla import format_duration
from maildesk.storage import db
from maildesk.storage.reports import load_created, load_done, load_open_due, reading

report_app = typer.Typer(
    help="Reports: SLA per level and staff, overdue tickets, monthly per client.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV (one row per line).")]


def _engine(settings: Settings) -> Engine:
    engine = db.make_engine(settings.effective_database_url)
    db.require_current_schema(engine)
    return engine


def _one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise ReportInputError("--json and --csv: choose one")


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _print_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _duration(minutes: float | None) -> str:
    return "-" if minutes is None else format_duration(round(minutes))


def _breaches(count: int, targets: int) -> str:
    return f"{count} ({count / targets:.0%})" if targets else "-"


@report_app.command("sla")
def sla(
    start: Annotated[str | None, typer.Option(
        "--from", help="First day (YYYY-MM-DD, the default level's time zone). "
        "Default: 30 days before --to.")] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="Last day, included. Default: now.")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """SLA per level and staff member: first response, resolution, breaches, ratings."""
    _one_format(as_json, as_csv)
    settings = load_settings()
    config = load_sla(settings.sla)
    zone, now = report_zone(config), datetime.now(UTC)
    lower, upper = day_window(start, end, zone, now)
    with reading(_engine(settings)) as session:
        rows = sla_report(load_created(session, lower, upper), config, now)
    if as_json:
        _print_json({"from": lower.isoformat(), "to": upper.isoformat(), "timezone": zone.key,
                     "rows": [r.as_dict() for r in rows]})
    elif as_csv:
        _print_csv([r.as_dict() for r in rows], list(rows[0].as_dict()))
    else:
        print(f"tickets created {_local(lower, zone)} .. {_local(upper, zone)} ({zone.key}); "
              "times are working time in each level's calendar")
        print_table(Console(), _sla_table(rows))


def _sla_table(rows: Sequence[SlaRow]) -> Table:
    table = Table("", "tickets", "answered", "1st resp. median", "p90", "1st resp. breaches",
                  "resolved", "resolution median", "p90", "resolution breaches", "good", "bad",
                  "reminders")
    for r in rows:
        table.add_row(
            f"{r.by} {r.key}" if r.by != "total" else "total",
            str(r.tickets), str(r.answered),
            _duration(r.first_response_median), _duration(r.first_response_p90),
            _breaches(r.first_response_breaches, r.first_response_targets),
            str(r.resolved),
            _duration(r.resolution_median), _duration(r.resolution_p90),
            _breaches(r.resolution_breaches, r.resolution_targets),
            str(r.good), str(r.bad), str(r.reminders),
        )
    return table


@report_app.command("overdue")
def overdue(as_json: JsonOpt = False) -> None:
    """Open tickets past or near a due time (within warn_before, else 1 h), most urgent first."""
    settings = load_settings()
    config = load_sla(settings.sla)
    now = datetime.now(UTC)
    with reading(_engine(settings)) as session:
        tickets = load_open_due(session, overdue_horizon(config, now))
    rows = overdue_report(tickets, config, now)
    if as_json:
        _print_json([r.as_dict() for r in rows])
        return
    if not rows:
        print("no open ticket is past or near a due time")
        return
    print_table(Console(), _overdue_table(rows))


def _overdue_table(rows: Sequence[OverdueRow]) -> Table:
    table = Table("TID", "level", "status", "assignee", "due", "", "working time", "subject")
    for row in rows:
        t = row.ticket
        for i, d in enumerate(row.deadlines):
            left = (f"overdue {format_duration(-d.working_minutes)}" if d.working_minutes < 0
                    else f"{format_duration(d.working_minutes)} left")
            table.add_row(
                t.tid if i == 0 else "", t.sla_level if i == 0 else "",
                t.status if i == 0 else "", (t.assignee or "-") if i == 0 else "",
                when(d.due), d.target.replace("_", " "), left, t.subject if i == 0 else "",
            )
    return table


@report_app.command("client")
def client(
    month: Annotated[str | None, typer.Option(
        "--month", help="YYYY-MM, in the default level's time zone. Default: last month.")
    ] = None,
    only: Annotated[str | None, typer.Option(
        "--client", help="A client from sla.yaml, a domain or an address.")] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    mail: Annotated[bool, typer.Option(
        "--mail", help="Queue it as a mail with a chart: to the admins, or with --client "
        "to that client's contacts (sla.yaml). Once per month and recipients.")] = False,
    resend: Annotated[bool, typer.Option(
        "--resend", help="With --mail: queue it even if it was queued before.")] = False,
) -> None:
    """Per client: tickets resolved or closed in a month, time spent (#time), ratings."""
    # the pipeline's modules (compose, store, runtime): only for this report
    from maildesk.work.client_report import (
        ADMINS,
        client_reports,
        client_ticket_dict,
        select_client,
    )

    _one_format(as_json, as_csv)
    settings = load_settings()
    config = load_sla(settings.sla)
    zone, now = report_zone(config), datetime.now(UTC)
    month = month.strip() if month is not None else previous_month(now, zone)
    lower, upper = month_window(month, zone)
    selector = select_client(config, only) if only is not None else None
    engine = _engine(settings)
    with reading(engine) as session:
        reports = client_reports(load_done(session, lower, upper), config, selector)
    if mail:
        _queue(engine, settings, month, selector.client if selector else ADMINS, reports, now,
               resend)
    elif as_json:
        _print_json({"month": month, "timezone": zone.key,
                     "clients": [r.as_dict() for r in reports]})
    elif as_csv:
        rows = [client_ticket_dict(r.client, t) for r in reports for t in r.tickets]
        _print_csv(rows, ["client", "tid", "subject", "requester", "status", "created_at",
                          "done_at", "time_spent_minutes", "rating"])
    else:
        print(f"tickets resolved or closed in {month} ({zone.key})")
        table = Table("client", "tickets", "time spent", "good", "bad")
        for r in reports:
            table.add_row(r.title, str(len(r.tickets)), format_duration(r.time_spent_minutes),
                          str(r.good), str(r.bad))
        print_table(Console(), table)
        if selector is not None:
            tickets = Table("TID", "done", "time spent", "rating", "requester", "subject")
            for r in reports:
                for t in r.tickets:
                    done = _local(t.done_at, zone) if t.done_at else "-"
                    tickets.add_row(t.tid, done, format_duration(t.time_spent_minutes),
                                    t.rating or "-", t.requester, t.subject)
            print_table(Console(), tickets)


def _queue(engine: Engine, settings: Settings, month: str, key: str, reports: Sequence[Any],
           now: datetime, resend: bool) -> None:
    from maildesk.config.runtime import load_runtime
    from maildesk.work.client_report import ADMINS, queue_report

    runtime = load_runtime(settings)
    if key == ADMINS:
        recipients = tuple(m.email for m in runtime.rules.admins)
        language, title = settings.language, None
        if not recipients:
            raise ReportInputError("--mail: no admins in rules.yaml (admin: true) to send it to")
    else:
        group = runtime.sla.clients.get(key)
        if group is None or not group.contacts:
            raise ReportInputError(
                f"--mail --client: client {key!r} has no contacts; add it under clients: in "
                f"{settings.sla} with contacts: [...]"
            )
        recipients, language = group.contacts, group.language or settings.language
        title = group.title or key
    with Session(engine) as session:
        queued = queue_report(session, runtime, month, key, recipients, reports, language, now,
                              title=title, resend=resend)
        session.commit()
    if queued is None:
        print(f"the {month} report to {', '.join(recipients)} was queued before; "
              "--resend queues it again")
    else:
        print(f"queued the {month} report to {', '.join(recipients)} (Message-ID <{queued}>)")
