"""`maildesk sla due` and `maildesk sla levels` as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import base_env, maildesk_cli


def _env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "data", f"sqlite:///{tmp_path / 'md.db'}")


def test_due_prints_working_time_due_times_in_the_calendar_zone_and_utc(tmp_path: Path) -> None:
    env = _env(tmp_path)
    # Friday 18:30 in Moscow; partner: 4 working hours, 10:00-19:00 Mon-Fri.
    out = maildesk_cli(env, "sla", "due", "--level", "partner", "--created",
                       "2026-12-04T18:30", "--json")
    due = json.loads(out.stdout)
    assert due["timezone"] == "Europe/Moscow"
    assert due["first_response_due"] == {"local": "2026-12-07T13:30:00+03:00",
                                         "utc": "2026-12-07T10:30:00Z"}
    assert due["first_response_warning"]["local"] == "2026-12-07T12:30:00+03:00"
    assert due["resolution_due"]["local"] == "2026-12-09T15:30:00+03:00"
    table = maildesk_cli(env, "sla", "due", "--level", "partner", "--created",
                         "2026-12-04T15:30Z").stdout
    assert "Mon 2026-12-07 13:30 MSK" in table and "Mon 2026-12-07 10:30 UTC" in table


def test_levels_lists_calendars_and_targets(tmp_path: Path) -> None:
    rows = json.loads(maildesk_cli(_env(tmp_path), "sla", "levels", "--json").stdout)
    assert [(r["level"], r["first_response"], r["hours"]) for r in rows] == [
        ("standard", "24h", "mon-fri 10:00-19:00; holidays RU + 1 date"),
        ("partner", "4h", "mon-fri 10:00-19:00; holidays RU + 1 date"),
        ("special", "1h", "24/7"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "gold", "--created", "2026-12-04T18:30"],
         "maildesk: --level gold: unknown SLA level; defined: standard, partner, special\n"),
        (["--level", "standard", "--created", "friday"],
         "maildesk: --created 'friday': not an ISO time like 2026-12-04T18:30"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = maildesk_cli(_env(tmp_path), "sla", "due", *args, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
