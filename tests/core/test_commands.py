"""Staff #commands at the top of a mail: parsed and checked, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from maildesk.config.files import load_rules
from maildesk.core.commands import parse_commands

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules.yaml")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
LEVELS = ("standard", "partner")


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_commands(text, RULES, LEVELS, "alice@example.com", NOW)


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("#close", "close", None),
        ("#assign Bob", "assign", "bob@example.com"),
        ("#assign BOB@example.com", "assign", "bob@example.com"),
        ("#assign me", "assign", "alice@example.com"),
        ("#priority HIGH", "priority", "high"),
        ("#group billing", "group", "billing"),
        ("#sla partner", "sla", "partner"),
        ("#category printers", "category", "printers"),
        ("#cc add carl@example.org", "cc", "carl@example.org"),
    ],
)
def test_valid_commands(line: str, name: str, value: str | None) -> None:
    parsed = parse(f"{line}\nThe answer.\n")
    assert parsed.errors == ()
    assert [(c.name, c.value) for c in parsed.commands] == [(name, value)]
    assert parsed.body == "The answer.\n".strip("\n")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("#asign bob", "did you mean #assign"),
        ("#assign bobby", "did you mean bob"),
        ("#priority critical", "unknown priority"),
        ("#sla gold", "unknown SLA level"),
        ("#time soon", "#time needs a duration"),
        ("#wait until 2020-01-01", "in the future"),
        ("#merge twelve", "#merge needs a ticket"),
        ("#close now", "takes no argument"),
    ],
)
def test_invalid_lines_are_named_with_the_reason(line: str, why: str) -> None:
    parsed = parse(f"#priority high\n{line}\nText")
    assert len(parsed.errors) == 1 and why in parsed.errors[0] and line in parsed.errors[0]


def test_durations_dates_and_where_commands_stop() -> None:
    parsed = parse("#time 1h30m\n\n#wait until 2026-12-01\nHello,\n#close is not a command here")
    assert [c.minutes for c in parsed.commands if c.name == "time"] == [90]
    (wait,) = [c for c in parsed.commands if c.name == "wait"]
    assert wait.until == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert parsed.body.startswith("Hello,") and "#close" in parsed.body
    assert parse("## a heading, not a command").commands == ()
