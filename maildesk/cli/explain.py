"""`maildesk thread explain MAIL.eml`: which ticket a mail would join and why, without
storing anything (the same classify, authorise and thread lookup as the pipeline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session

from maildesk.config.runtime import Runtime, load_runtime
from maildesk.config.settings import load_settings
from maildesk.core.classify import classify
from maildesk.core.identity import authorise
from maildesk.core.parse import parse_mail
from maildesk.core.tid import format_tid
from maildesk.storage.db import make_engine, read_only, require_current_schema
from maildesk.storage.thread import lookup_thread

thread_app = typer.Typer(help="Threading: which ticket a mail joins.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class ThreadExplanation:
    sender: str
    identity: str
    kind: str
    ticket: str | None  # the TID it would join, None: a new ticket
    reason: str
    refused: list[str]
    linked_to: str | None
    ignored_headers: list[str]


def explain_thread(
    engine: Engine, runtime: Runtime, raw: bytes, envelope_to: list[str]
) -> ThreadExplanation:
    mail = parse_mail(raw)
    kind = classify(mail, None, frozenset(runtime.settings.support_addresses))
    identity = authorise(mail, envelope_to, runtime.trust)
    with Session(read_only(engine)) as session:
        thread = lookup_thread(
            session, mail, kind, identity, envelope_to, runtime.hmac_key
        )
        session.rollback()
    if thread.ticket is not None:
        reason = thread.reason or f"joins {format_tid(thread.ticket.id)} ({thread.via})"
    elif kind.kind == "auto_reply" and thread.refused_ticket is not None:
        reason = f"an auto-reply: noted on {format_tid(thread.refused_ticket.id)}, no ticket"
    else:
        reason = f"a new ticket: {thread.reason}" if thread.reason else "a new ticket"
    return ThreadExplanation(
        sender=mail.from_addr or "(none)",
        identity=f"{identity.role}: {identity.reason}",
        kind=kind.kind,
        ticket=format_tid(thread.ticket.id) if thread.ticket else None,
        reason=reason,
        refused=[format_tid(t) for t in thread.refused],
        linked_to=format_tid(thread.refused[0]) if thread.ticket is None and thread.refused
        else None,
        ignored_headers=list(mail.dropped),
    )


@thread_app.command("explain")
def explain(
    mail: Annotated[Path, typer.Argument(help="A saved mail (.eml)")],
    to: Annotated[
        str, typer.Option(help="The address it was sent to (envelope), e.g. a reply token")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which ticket MAIL would join and why; nothing is stored."""
    try:
        raw = mail.read_bytes()
    except OSError as exc:
        err.print(f"maildesk: {mail}: {exc.strerror}")
        raise typer.Exit(1) from None
    settings = load_settings()  # a MaildeskError is one line from maildesk.cli.main.main
    runtime = load_runtime(settings)
    engine = make_engine(settings.effective_database_url)
    require_current_schema(engine)
    result = explain_thread(engine, runtime, raw, [to] if to else [])
    if as_json:
        print(json.dumps(result.__dict__, ensure_ascii=False, indent=2))
        return
    lines: list[tuple[str, Any]] = [
        ("sender", result.sender),
        ("identity", result.identity),
        ("kind", result.kind),
        ("ticket", result.ticket or "(new ticket)"),
        ("why", result.reason),
    ]
    if result.refused:
        lines.append(("refused", ", ".join(result.refused) + " (the sender is not on them)"))
    if result.linked_to:
        lines.append(("linked to", result.linked_to))
    for problem in result.ignored_headers:
        lines.append(("ignored", problem))
    for label, value in lines:
        console.print(f"{label + ':':10} {value}")
