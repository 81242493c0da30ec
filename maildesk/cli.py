"""The `maildesk` command line. Only this module exits; errors are one clear line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from maildesk import db, queries
from maildesk.errors import ConfigError, MaildeskError
from maildesk.imap.cli import imap_app
from maildesk.settings import Settings, load_settings
from maildesk.spam.cli import spam_app

app = typer.Typer(
    help="maildesk: the email-first helpdesk daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(spam_app, name="spam", help="Spam filter: train, score, evaluate.")
app.add_typer(imap_app, name="imap", help="IMAP mailboxes: check the connection.")
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


def _engine(settings: Settings) -> Any:
    engine = db.make_engine(settings.effective_database_url)
    db.require_current_schema(engine)
    return engine


@app.command()
def run() -> None:
    """Run the daemon: SMTP listener, pipeline, outbox sender, scheduler."""
    from maildesk.daemon import run_daemon

    settings = load_settings()
    _setup_logging(settings)
    asyncio.run(run_daemon(settings))


@app.command()
def check() -> None:
    """Validate settings, rules.yaml, sla.yaml, templates, outbound URL and database."""
    from maildesk.outbox import transport_from_url
    from maildesk.runtime import load_runtime

    settings = load_settings()
    problems: list[str] = []
    try:
        load_runtime(settings)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        transport_from_url(settings.effective_outbound)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        engine = db.make_engine(settings.effective_database_url)
        db.require_current_schema(engine)
    except MaildeskError as exc:
        problems.append(str(exc))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise typer.Exit(1)
    console.print(
        f"OK: {settings.rules}, {settings.sla}, {settings.templates}/ and settings are valid"
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help=".eml files, directories, Maildirs, mbox")],
) -> None:
    """Run saved mail through the same pipeline as live mail."""
    from maildesk.ingest_files import ingest_paths
    from maildesk.runtime import load_runtime

    settings = load_settings()
    _setup_logging(settings)
    logging.getLogger("maildesk").setLevel(logging.WARNING)
    runtime = load_runtime(settings)
    engine = _engine(settings)
    with Progress(console=err, transient=True) as progress:
        stats = asyncio.run(ingest_paths(engine, runtime, paths, progress))
    console.print(
        f"{stats.processed} processed: {len(stats.tickets)} tickets touched, "
        f"{stats.duplicates} duplicates, {stats.failed} kept as errors"
    )


@app.command()
def tickets(
    status: Annotated[str | None, typer.Option(help="Only tickets with this status.")] = None,
    spam: Annotated[bool, typer.Option("--spam", help="The spam quarantine instead.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List tickets."""
    rows = queries.list_tickets(
        _engine(load_settings()), status="spam" if spam else status, limit=limit
    )
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
            str(r["created_at"])[:16],
        )
    console.print(table)
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
        f"SLA {t['sla_level']} (first answer due {t['first_response_due']}), "
        f"assignee {t['assignee'] or '-'}, language {t['language']}",
        highlight=False,
    )
    console.print(
        "participants: " + ", ".join(f"{p['address']} ({p['role']})" for p in data["participants"]),
        highlight=False,
    )
    for m in data["messages"]:
        spam = f"  spam {m['spam_probability']:.3f} ({m['spam_band']})" if m["spam_band"] else ""
        console.rule(f"{m['created_at']}  {m['direction']} {m['kind']} from {m['from_addr']}{spam}")
        console.print(m["body_text"][:2000] or m["subject"], markup=False, highlight=False)
        for a in m["attachments"]:
            console.print(
                f"  [attachment] {a['filename']} ({a['content_type']}, {a['size']} B)", markup=False
            )
    console.rule("events")
    for e in data["events"]:
        console.print(f"{e['at']}  {e['actor']}  {e['kind']}: {e['detail']}", markup=False)
    console.rule("outbound mail")
    for o in data["outbox"]:
        console.print(
            f"{o['created_at']}  {o['kind']} to {o['recipients']}: {o['status']}"
            + (f" ({o['last_error']})" if o["last_error"] else ""),
            markup=False,
        )


@app.command()
def outbox(
    status: Annotated[str | None, typer.Option(help="queued, sent or failed")] = None,
    limit: int = 100,
    as_json: JsonOpt = False,
) -> None:
    """List outbound mail and its delivery state."""
    rows = queries.list_outbox(_engine(load_settings()), status=status, limit=limit)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    table = Table("id", "TID", "kind", "to", "status", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["tid"] or "-",
            r["kind"],
            r["recipients"],
            r["status"],
            str(r["attempts"]),
            (r["last_error"] or "")[:60],
        )
    console.print(table)


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
            str(r["id"]), str(r["received_at"])[:19], r["source"], str(r["size"]), r["error"] or ""
        )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the current version."""
    settings = load_settings()
    engine = db.make_engine(settings.effective_database_url)
    before, after = db.upgrade(engine)
    console.print(f"database at {after} (was {before or 'empty'})")


def main() -> None:
    try:
        app()
    except MaildeskError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"maildesk: {line}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
