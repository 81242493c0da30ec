"""`maildesk imap ...`: check the IMAP side without touching it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Engine

from maildesk.config.settings import load_settings
from maildesk.errors import MaildeskError
from maildesk.intake.imap.probe import ProbeReport, probe
from maildesk.intake.imap.service import mailboxes_from_settings, options_from_settings
from maildesk.storage.db import make_engine, require_current_schema

imap_app = typer.Typer(help="IMAP mailboxes (MAILDESK_IMAP_URL).", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _engine(url: str) -> tuple[Engine | None, str | None]:
    """A read-only look at the state; never creates a database file."""
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[-1])
        if not path.is_file():
            return None, f"no database yet at {path}"
    try:
        engine = make_engine(url)
        require_current_schema(engine)
    except MaildeskError as exc:
        return None, str(exc)
    return engine, None


@imap_app.command("test")
def test_connection(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Connect to each mailbox, show folders and counts, and what the poller would do.

    Changes nothing: the folder is opened read-only; nothing is created or moved.
    """
    settings = load_settings()
    if not settings.imap_url:
        err.print("maildesk: MAILDESK_IMAP_URL is not set; the IMAP poller is off", markup=False)
        raise typer.Exit(1)
    mailboxes = mailboxes_from_settings(settings)
    options = options_from_settings(settings)
    engine, db_problem = _engine(settings.effective_database_url)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        for mailbox in mailboxes:
            try:
                report = probe(mailbox, options, engine)
                report.state_problem = report.state_problem or db_problem
            except MaildeskError as exc:
                failed = True
                results.append({"mailbox": mailbox.label, "ok": False, "error": str(exc)})
                if not as_json:
                    err.print(f"{mailbox.label}: FAILED: {exc}", markup=False)
                continue
            results.append({"ok": True, **_as_dict(report)})
            if not as_json:
                _print(report)
    finally:
        if engine is not None:
            engine.dispose()
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    if failed:
        raise typer.Exit(1)


def _as_dict(report: ProbeReport) -> dict[str, Any]:
    data = asdict(report)
    if report.state is not None:
        data["state"] = {
            "uidvalidity": report.state.uidvalidity,
            "last_uid": report.state.last_uid,
            "failing": {str(k): v.count for k, v in report.state.failures.items()},
        }
    return data


def _print(report: ProbeReport) -> None:
    out = console.print
    out(f"{report.mailbox}: OK ({report.security})", markup=False)
    wanted = ("IDLE", "MOVE", "UIDPLUS", "STARTTLS")
    caps = [c for c in wanted if c in report.capabilities]
    out(f"  capabilities: {', '.join(caps) or 'none of IDLE/MOVE/UIDPLUS'}", markup=False)
    out(
        f"  folder: {report.messages} message(s), UIDVALIDITY {report.uidvalidity}, "
        f"UIDNEXT {report.uidnext}",
        markup=False,
    )
    for name, count in report.folders.items():
        out(f"  {name}: {'missing' if count is None else f'{count} message(s)'}", markup=False)
    if report.state_problem:
        out(f"  state: unknown ({report.state_problem})", markup=False)
    elif report.state is not None and report.state.uidvalidity is not None:
        out(
            f"  state: UIDVALIDITY {report.state.uidvalidity}, last UID {report.state.last_uid}, "
            f"{len(report.state.failures)} failing",
            markup=False,
        )
    else:
        out("  state: never polled", markup=False)
    out("  the poller would:", markup=False)
    for line in report.plan:
        out(f"    - {line}", markup=False)
