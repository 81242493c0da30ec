"""`maildesk attachment get TID NAME`: a ticket's attachment, byte for byte, by its name."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session, col, select

from maildesk.config.settings import load_settings
from maildesk.core.tid import format_tid, parse_tid
from maildesk.errors import NotFound
from maildesk.storage.db import make_engine, require_current_schema
from maildesk.storage.models import Attachment, Message

attachment_app = typer.Typer(help="Attachments of a ticket.", no_args_is_help=True)


def find_attachment(data_dir: Path, engine_url: str, tid: str, name: str) -> Path:
    """The stored file of the newest attachment called NAME on ticket TID."""
    number = parse_tid(tid)
    if number is None:
        raise NotFound(f"{tid!r} is not a ticket ID (expected [MD-42], MD-42 or 42)")
    engine = make_engine(engine_url)
    require_current_schema(engine)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(Attachment.filename, Attachment.sha256)
                .join(Message, col(Message.id) == col(Attachment.message_id))
                .where(Message.ticket_id == number)
                .order_by(col(Attachment.id).desc())
            ).all()
    finally:
        engine.dispose()
    digest = next((sha for filename, sha in rows if filename == name), None)
    if digest is None:
        names = ", ".join(sorted({f for f, _ in rows})) or "none"
        raise NotFound(f"{format_tid(number)} has no attachment {name!r} (it has: {names})")
    return data_dir / "attachments" / digest[:2] / digest


@attachment_app.command("get")
def get(
    tid: Annotated[str, typer.Argument(help="The ticket: MD-42, [MD-42] or 42")],
    name: Annotated[str, typer.Argument(help="The attachment's file name")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout)")
    ] = None,
) -> None:
    """Write a ticket's attachment, byte for byte, to stdout or a file."""
    settings = load_settings()
    path = find_attachment(settings.data_dir, settings.effective_database_url, tid, name)
    data = path.read_bytes()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
        typer.echo(f"{output}: {len(data)} bytes", err=True)
