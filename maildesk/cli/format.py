"""How the command line shows things: times to the minute with their zone, and
tables that do not wrap when piped (scripts use --json)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 10_000  # a pipe has no width: one row stays one line


def print_table(console: Console, table: Table) -> None:
    """On a terminal as wide as it is; piped, every row on one line."""
    if sys.stdout.isatty():
        console.print(table)
    else:
        Console(width=PIPED_WIDTH).print(table)


def when(value: Any) -> str:
    """2026-11-24 09:05 CET: local time (TZ) to the minute, with the zone.
    The database holds UTC; a naive value from SQLite is UTC."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone().strftime("%Y-%m-%d %H:%M %Z"))
