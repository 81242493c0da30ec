"""`check`, `ingest`, `tickets` and `outbox` as an operator runs them: mistakes are
one line and a non-zero exit, imports do not write to historical senders."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env, maildesk_cli
from tests.mailkit import make_mail


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = base_env(tmp_path / "data", f"sqlite:///{tmp_path / 'md.db'}", **extra)
    maildesk_cli(env, "db", "upgrade")
    return env


def _rules(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"MAILDESK_OUTBOUND": "smtp://relay.example:notaport"}, "MAILDESK_OUTBOUND: the port"),
        ({"MAILDESK_OUTBOUND": "smtp://u:hunter2@relay.example:x"}, "MAILDESK_OUTBOUND: "),
        ({"MAILDESK_IMAP_URL": "http://x/INBOX"}, "MAILDESK_IMAP_URL: "),
        ({"MAILDESK_SMTP_LISTEN": "nonsense"}, "MAILDESK_SMTP_LISTEN: "),
    ],
)
def test_check_reports_settings_run_would_trip_over(
    tmp_path: Path, setting: dict[str, str], expected: str
) -> None:
    env = _env(tmp_path)
    env.update(setting)
    result = maildesk_cli(env, "check", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "hunter2" not in result.stderr  # a password never reaches a log or a terminal
    as_json = json.loads(maildesk_cli(env, "check", "--json", check=False).stdout)
    assert as_json["ok"] is False and as_json["errors"] == lines


def test_check_finds_rules_that_would_quietly_do_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for text, expected in [
        ("", ":1: staff: no staff"),
        ("staff: []\n", ":1: staff: no staff"),
        (
            (REPO / "rules.yaml")
            .read_text()
            .replace("priority: high,", "sla: gold, priority: high,"),
            ":17: rules.1.then.sla: unknown SLA level 'gold'",
        ),
    ]:
        env["MAILDESK_RULES"] = path = _rules(tmp_path, text)
        result = maildesk_cli(env, "check", check=False)
        assert result.returncode == 1, text
        assert result.stderr.startswith(f"{path}{expected}"), result.stderr


def test_check_says_when_sla_falls_back_and_json_is_for_scripts(tmp_path: Path) -> None:
    (tmp_path / "sla.yaml").write_text("")
    env = _env(tmp_path, MAILDESK_SLA=str(tmp_path / "sla.yaml"))
    result = maildesk_cli(env, "check")
    assert f"warning: {tmp_path / 'sla.yaml'}: empty;" in result.stderr
    report = json.loads(maildesk_cli(env, "check", "--json").stdout)
    assert report["ok"] is True and report["errors"] == []
    assert report["warnings"][0].startswith(f"{tmp_path / 'sla.yaml'}: empty;")


OLD = "Tue, 01 Jan 2019 10:00:00 +0000"


def _dated(raw: bytes, date: str) -> bytes:
    return raw.replace(b"Mon, 23 Nov 2026 10:00:00 +0000", date.encode())


def _outbox_count(env: dict[str, str]) -> int:
    return len(json.loads(maildesk_cli(env, "outbox", "--json").stdout))


def test_ingest_refuses_files_that_are_not_mail(tmp_path: Path) -> None:
    env = _env(tmp_path)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "hostname").write_text("mailhost\n")
    (inbox / "notes.csv").write_text("a,b\n1,2\n")
    (inbox / "real.eml").write_bytes(make_mail(subject="A real one"))
    result = maildesk_cli(env, "ingest", str(inbox), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{inbox / 'hostname'}: not a mail (it does not start with a header line); skipped",
        f"{inbox / 'notes.csv'}: not a mail (it does not start with a header line); skipped",
    ]
    tickets = json.loads(maildesk_cli(env, "tickets", "--json").stdout)
    assert [t["subject"] for t in tickets] == ["A real one"]


def test_ingest_of_an_old_mailbox_sends_nothing_by_default(tmp_path: Path) -> None:
    env = _env(tmp_path)
    box = mailbox.mbox(str(tmp_path / "archive.mbox"))
    for i in range(3):  # from 2019: their senders must not hear from us now
        box.add(_dated(make_mail(sender=f"old{i}@example.org"), OLD))
    box.flush()
    result = maildesk_cli(env, "ingest", str(tmp_path / "archive.mbox"))
    assert "3 processed: 3 tickets touched" in result.stdout
    assert _outbox_count(env) == 0
    shown = json.loads(maildesk_cli(env, "show", "MD-1", "--json").stdout)
    assert any(e["kind"] == "imported" for e in shown["events"])


def test_ingest_notify_flags_and_recent_mail(tmp_path: Path) -> None:
    env = _env(tmp_path)
    now = format_datetime(datetime.now(UTC))
    (tmp_path / "recent.eml").write_bytes(_dated(make_mail(sender="new@example.org"), now))
    maildesk_cli(env, "ingest", str(tmp_path / "recent.eml"))
    assert _outbox_count(env) == 2  # confirmation + staff notification: it is live mail
    (tmp_path / "quiet.eml").write_bytes(_dated(make_mail(sender="q@example.org"), now))
    maildesk_cli(env, "ingest", "--no-notify", str(tmp_path / "quiet.eml"))
    assert _outbox_count(env) == 2
    (tmp_path / "loud.eml").write_bytes(_dated(make_mail(sender="l@example.org"), OLD))
    maildesk_cli(env, "ingest", "--notify", str(tmp_path / "loud.eml"))
    assert _outbox_count(env) == 4


def test_ingest_dry_run_stores_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "a.eml").write_bytes(make_mail(subject="Would be a ticket"))
    (tmp_path / "hostname").write_text("mailhost\n")
    result = maildesk_cli(
        env,
        "ingest",
        "--dry-run",
        "--notify",
        str(tmp_path / "a.eml"),
        str(tmp_path / "hostname"),
        check=False,
    )
    assert result.returncode == 1  # a file was not mail
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'a.eml'}: new ticket (new, normal, SLA standard")
    assert "would send: confirmation to ann@example.org; notification to" in lines[0]
    assert (
        lines[1]
        == f"{tmp_path / 'hostname'}: not a mail (it does not start with a header line); skipped"
    )
    assert lines[2] == "dry run, nothing stored: 1 new, 1 not-mail"
    assert json.loads(maildesk_cli(env, "tickets", "--json").stdout) == []
    assert _outbox_count(env) == 0
    assert not (tmp_path / "data" / "attachments").exists()


@pytest.mark.parametrize("command", ["tickets", "outbox"])
def test_unknown_status_is_an_error_listing_the_valid_ones(tmp_path: Path, command: str) -> None:
    env = _env(tmp_path)
    result = maildesk_cli(env, command, "--status", "bogus", check=False)
    assert result.returncode == 1
    valid = "new, open, answered" if command == "tickets" else "queued, sent, failed"
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()
    ] and result.stderr.startswith("maildesk: --status bogus: unknown status; valid: " + valid)


def test_tables_show_minutes_with_zone_and_do_not_wrap_when_piped(tmp_path: Path) -> None:
    env = _env(tmp_path, TZ="UTC")
    subject = "A subject long enough to wrap an eighty column table " * 3
    (tmp_path / "a.eml").write_bytes(make_mail(subject=subject.strip()))
    result = maildesk_cli(env, "ingest", str(tmp_path / "a.eml"))
    assert "alembic" not in result.stderr and "INFO" not in result.stderr, result.stderr
    table = maildesk_cli(env, "tickets").stdout
    row = next(line for line in table.splitlines() if "MD-1" in line)
    assert subject.strip() in row
    assert row.rstrip(" │").endswith(" UTC")
