"""The `maildesk` command line. Only this module exits; errors are one clear line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from maildesk.cli.attachments import attachment_app
from maildesk.cli.explain import thread_app
from maildesk.cli.format import print_table, when
from maildesk.cli.imap import imap_app
from maildesk.cli.quotes import quote_app
from maildesk.cli.reports import report_app
from maildesk.cli.sla import sla_app
from maildesk.cli.spam import spam_app
from maildesk.config.settings import Settings, load_settings
from maildesk.errors import ConfigError, MaildeskError
from maildesk.lifecycle import SignalLatch
from maildesk.storage import db, queries

app = typer.Typer(
    help="maildesk: the email-first helpdesk daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(spam_app, name="spam", help="Spam filter: train, score, evaluate.")
app.add_typer(imap_app, name="imap", help="IMAP mailboxes: check the connection.")
app.add_typer(thread_app, name="thread", help="Threading: which ticket a mail joins, and why.")
app.add_typer(attachment_app, name="attachment", help="Attachments: get one by name.")
app.add_typer(quote_app, name="quote", help="Quote stripping: what a staff reply relays.")
app.add_typer(sla_app, name="sla", help="SLA: levels, calendars and due times.")
app.add_typer(report_app, name="report", help="Reports: SLA, overdue tickets, clients.")
console = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)  # we report defects ourselves
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl ..." on every start


def _engine(settings: Settings) -> Any:
    engine = db.make_engine(settings.effective_database_url)
    db.require_current_schema(engine)
    return engine


@app.command()
def run(ctx: typer.Context) -> None:
    """Run the daemon: SMTP listener, pipeline, outbox sender, scheduler."""
    latch = ctx.obj if isinstance(ctx.obj, SignalLatch) else SignalLatch()
    if not latch.installed:
        latch.install()
    os.umask(0o077)  # the database, spool and attachments hold customers' mail
    from maildesk.app import run_daemon

    settings = load_settings()
    _setup_logging(settings)
    asyncio.run(run_daemon(settings, latch=latch))


@app.command()
def check(as_json: JsonOpt = False) -> None:
    """Validate settings, rules.yaml, sla.yaml, templates, outbound and IMAP URLs, database."""
    from maildesk.cli.check import CheckReport, check_all

    try:
        report = check_all(load_settings())
    except ConfigError as exc:  # the settings themselves
        report = CheckReport(problems=exc.problems)
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for note in report.notes:
            print(f"warning: {note}", file=sys.stderr)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        if report.ok:
            print("OK: settings, rules, SLA, templates and database are valid")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help=".eml files, directories, Maildirs, mbox")],
    notify: Annotated[
        bool | None,
        typer.Option(
            "--notify/--no-notify",
            help="Send confirmations and staff notifications for every mail / for none. "
            "Default: only for mail dated within the last day (imports stay quiet).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what each mail would become; store nothing.")
    ] = False,
) -> None:
    """Run saved mail through the same pipeline as live mail (imports, replays)."""
    from maildesk.cli.ingest import ingest_paths, notify_policy
    from maildesk.config.runtime import load_runtime

    settings = load_settings()
    _setup_logging(settings)
    logging.getLogger("maildesk").setLevel(logging.WARNING)
    runtime = load_runtime(settings)
    engine = _engine(settings)
    policy = notify_policy(notify)
    if dry_run:
        from maildesk.cli.dryrun import preview_paths

        counts = asyncio.run(
            preview_paths(engine, runtime, paths, policy, lambda p: print(p.line, flush=True))
        )
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        print(f"dry run, nothing stored: {summary or 'no mail'}")
        if counts.get("not-mail"):
            raise typer.Exit(1)
        return
    with Progress(console=err, transient=True) as progress:
        stats = asyncio.run(ingest_paths(engine, runtime, paths, progress, policy))
    for line in stats.refused:
        print(line, file=sys.stderr)
    console.print(
        f"{stats.processed} processed: {len(stats.tickets)} tickets touched, "
        f"{stats.duplicates} duplicates, {stats.failed} kept as errors"
        + (f", {len(stats.refused)} files refused (not mail)" if stats.refused else "")
    )
    if stats.refused:
        raise typer.Exit(1)


def _valid_status(value: str | None, valid: tuple[str, ...]) -> str | None:
    if value is not None and value not in valid:
        raise MaildeskError(f"--status {value}: unknown status; valid: {', '.join(valid)}")
    return value


@app.command()
def tickets(
    status: Annotated[
        str | None,
        typer.Option(help="Only tickets with this status: " + ", ".join(queries.TICKET_STATUSES)),
    ] = None,
    spam: Annotated[bool, typer.Option("--spam", help="The spam quarantine instead.")] = False,
    assignee: Annotated[
        str | None, typer.Option(help="Only this staff member's (an address; none: unassigned).")
    ] = None,
    requester: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    level: Annotated[str | None, typer.Option(help="Only this SLA level.")] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="Only those past their first-answer due time.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List tickets."""
    status = _valid_status(status, queries.TICKET_STATUSES)
    where = queries.TicketFilter(
        status="spam" if spam else status,
        assignee=assignee,
        requester=requester,
        level=level,
        overdue_at=datetime.now(UTC) if overdue else None,
    )
    rows = queries.list_tickets(_engine(load_settings()), limit=limit, where=where)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    table = Table("TID", "status", "priority", "requester", "assignee", "subject", "created")
    for r in rows:
        table.add_row(
            r["tid"],
            r["status"],
            r["priority"],
            r["requester"],
            r["assignee"] or "-",
            r["subject"],
            when(r["created_at"]),
        )
    print_table(console, table)
    if len(rows) == limit:
        err.print(f"(the newest {limit}; use --limit for more)")


@app.command()
def show(
    tid: Annotated[str, typer.Argument(help="[MD-42], MD-42 or 42")],
    as_json: JsonOpt = False,
) -> None:
    """Show one ticket: messages, participants, events, outbound mail."""
    data = queries.show_ticket(_engine(load_settings()), tid)
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        return
    t = data["ticket"]
    console.print(f"[bold]{t['tid']}[/bold] {t['subject']}", highlight=False)
    console.print(
        f"status {t['status']}, priority {t['priority']}, category {t['category']}, "
        f"SLA {t['sla_level']} (first answer due {when(t['first_response_due'])}), "
        f"assignee {t['assignee'] or '-'}, language {t['language']}",
        highlight=False,
    )
    extra = [f"time spent {t['time_spent_minutes']} min"] if t["time_spent_minutes"] else []
    if t["rating"]:
        extra.append(f"rated {t['rating']}" + (f": {t['rating_comment']}"
                                                if t["rating_comment"] else ""))
    for key, label in (("pending_until", "pending until"), ("resolved_at", "resolved"),
                       ("closed_at", "closed")):
        if t[key]:
            extra.append(f"{label} {when(t[key])}")
    if t["merged_into"]:
        extra.append(f"merged into {t['merged_into']}")
    if extra:
        console.print(", ".join(extra), markup=False, highlight=False)
    console.print(
        "participants: " + ", ".join(f"{p['address']} ({p['role']})" for p in data["participants"]),
        highlight=False,
    )
    for m in data["messages"]:
        spam = f"  spam {m['spam_probability']:.3f} ({m['spam_band']})" if m["spam_band"] else ""
        console.rule(
            f"{when(m['created_at'])}  {m['direction']} {m['kind']} from {m['from_addr']}{spam}"
        )
        if m["identity"]:
            console.print(
                f"identity: {m['identity']} ({m['identity_reason']})", markup=False, highlight=False
            )
        console.print(m["body_text"][:2000] or m["subject"], markup=False, highlight=False)
        for a in m["attachments"]:
            console.print(
                f"  [attachment] {a['filename']} ({a['content_type']}, {a['size']} B)", markup=False
            )
    console.rule("events")
    for e in data["events"]:
        console.print(f"{when(e['at'])}  {e['actor']}  {e['kind']}: {e['detail']}", markup=False)
    console.rule("outbound mail")
    for o in data["outbox"]:
        console.print(
            f"{when(o['created_at'])}  {o['kind']} to {', '.join(o['recipients'])}: {o['status']}"
            + (f" ({o['last_error']})" if o["last_error"] else ""),
            markup=False,
        )


@app.command(name="do")
def do_commands(
    tid: Annotated[str, typer.Argument(help="[MD-42], MD-42 or 42")],
    commands: Annotated[list[str], typer.Argument(help="'#assign bob' '#priority high' ...")],
    as_: Annotated[
        str | None, typer.Option("--as", help="Your staff address (default MAILDESK_OPERATOR).")
    ] = None,
) -> None:
    """Change a ticket with the #commands staff use by mail; all or nothing."""
    from maildesk.cli.operator import run_commands  # the pipeline's modules: only when used
    from maildesk.cli.spam import load_spam_filter
    from maildesk.config.runtime import load_runtime

    settings = load_settings()
    runtime = load_runtime(settings)
    events = run_commands(
        _engine(settings), runtime, tid, commands, as_ if as_ is not None else settings.operator,
        spam_filter=load_spam_filter,
    )
    for line in events:
        print(line)


@app.command()
def outbox(
    status: Annotated[str | None, typer.Option(help="queued, sent or failed")] = None,
    limit: int = 100,
    as_json: JsonOpt = False,
) -> None:
    """List outbound mail and its delivery state."""
    status = _valid_status(status, queries.OUTBOX_STATUSES)
    rows = queries.list_outbox(_engine(load_settings()), status=status, limit=limit)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    table = Table("id", "TID", "kind", "to", "status", "attempts", "created", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["tid"] or "-",
            r["kind"],
            ", ".join(r["recipients"]),
            r["status"],
            str(r["attempts"]),
            when(r["created_at"]),
            (r["last_error"] or "")[:60],
        )
    print_table(console, table)


@app.command()
def errors(limit: int = 100, as_json: JsonOpt = False) -> None:
    """Mail kept raw but not processed (too complex, parse failures), for a human to look at."""
    rows = queries.list_errors(_engine(load_settings()), limit=limit)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    table = Table("inbound", "received", "source", "size", "error")
    for r in rows:
        table.add_row(
            str(r["id"]), when(r["received_at"]), r["source"], str(r["size"]), r["error"] or ""
        )
    print_table(console, table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the current version."""
    settings = load_settings()
    engine = db.make_engine(settings.effective_database_url)
    before, after = db.upgrade(engine)
    console.print(f"database at {after} (was {before or 'empty'})")


def main(latch: SignalLatch | None = None) -> None:
    try:
        app(obj=latch)
    except MaildeskError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"maildesk: {line}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
