"""`maildesk quote strip MAIL.eml`: what a staff reply would relay to the customer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from maildesk.core.parse import InboundMail, parse_mail
from maildesk.core.quotes import StrippedReply, strip_reply
from maildesk.errors import MalformedMail

quote_app = typer.Typer(help="Quote stripping: what a reply relays.", no_args_is_help=True)

class NotAMail(MalformedMail):
    """The file has no header section a mail would have."""


def read_mail(path: Path) -> InboundMail:
    """Parse a saved mail; a missing file or a file that is no mail is one clear error."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MalformedMail(f"{path}: {exc.strerror or exc}") from None
    try:
        mail = parse_mail(raw)
    except MalformedMail as exc:
        raise MalformedMail(f"{path}: {exc}") from None
    if not mail.headers:
        raise NotAMail(f"{path}: not a mail (no header section)")
    return mail


def describe(result: StrippedReply) -> str:
    how = "relayed whole (stripping left nothing but a greeting)" if result.whole else "stripped"
    return f"{result.text}\n\nremoved {result.removed_lines} lines; {how}"


@quote_app.command("strip")
def strip(
    mail: Annotated[Path, typer.Argument(help="A saved mail (.eml)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print what would be relayed to the customer: MAIL without quotes and signature."""
    try:
        parsed = read_mail(mail)
    except MalformedMail as exc:
        typer.echo(f"maildesk: {exc}", err=True)
        raise typer.Exit(1) from None
    result = strip_reply(parsed.text, parsed.html)
    if as_json:
        payload = {
            "text": result.text,
            "html": result.html,
            "removed_lines": result.removed_lines,
            "whole": result.whole,
        }
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    typer.echo(describe(result))
