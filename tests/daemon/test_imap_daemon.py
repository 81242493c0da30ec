"""`maildesk run` with MAILDESK_IMAP_URL against a real Dovecot, as a user runs it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, base_env, free_port, maildesk_cli, wait_for
from tests.intake.conftest_imap import dovecot_fixture
from tests.intake.dovecot import Dovecot
from tests.mailkit import make_mail, send

__all__ = ["dovecot_fixture"]

StartDaemon = Callable[..., Daemon]


def imap_env(dovecot: Dovecot, **extra: str) -> dict[str, str]:
    env = {
        "MAILDESK_IMAP_URL": dovecot.url(),
        "MAILDESK_IMAP_POLL_SECONDS": "2",
    }
    env.update(extra)
    return env


def tickets(daemon: Daemon) -> int:
    return int(daemon.scalar("select count(*) from ticket"))


def test_killed_between_commit_and_move_no_duplicate(
    dovecot: Dovecot, start_daemon: StartDaemon
) -> None:
    crashing = start_daemon("tests.faultydaemon", **imap_env(dovecot))
    dovecot.append([make_mail(subject="Crash me")])
    assert crashing.proc is not None
    assert crashing.proc.wait(timeout=30) == -signal.SIGKILL
    assert tickets(crashing) == 1  # committed ...
    assert dovecot.count("INBOX") == 1  # ... but not moved

    daemon = start_daemon(**imap_env(dovecot))
    wait_for(lambda: dovecot.count("Processed") == 1, timeout=30)
    assert dovecot.count("INBOX") == 0
    assert tickets(daemon) == 1
    statuses = dict(daemon.query("select status, count(*) from inbound group by status"))
    assert statuses == {"done": 1, "duplicate": 1}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_wrong_password_one_clear_line_smtp_keeps_working(
    dovecot: Dovecot, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(**imap_env(dovecot, MAILDESK_IMAP_URL=dovecot.url(password="wrong")))
    send(daemon.port, make_mail(subject="Via SMTP"))
    wait_for(lambda: tickets(daemon) == 1)
    wait_for(lambda: "login as alice refused" in daemon.log())
    dovecot.append([make_mail(subject="Not fetched")])
    send(daemon.port, make_mail(subject="Via SMTP again"))
    wait_for(lambda: tickets(daemon) == 2)
    log = daemon.log()
    assert log.count("login as alice refused") == 1, log
    assert "Traceback" not in log
    line = next(x for x in log.splitlines() if "login as alice refused" in x)
    assert "ERROR" in line and "MAILDESK_IMAP_URL" in line and "wrong" not in line
    assert dovecot.count("INBOX") == 1


@pytest.mark.parametrize("backend", ["postgresql"])
def test_standby_takes_over_when_the_poller_dies(
    dovecot: Dovecot, start_daemon: StartDaemon
) -> None:
    first = start_daemon(**imap_env(dovecot))
    dovecot.append([make_mail(subject="first")])
    wait_for(lambda: dovecot.count("Processed") == 1, timeout=30)
    second = start_daemon(**imap_env(dovecot))
    wait_for(lambda: "standing by" in second.log(), timeout=30)
    first.stop(signal.SIGKILL)
    dovecot.append([make_mail(subject="second")])
    wait_for(lambda: dovecot.count("Processed") == 2, timeout=60)
    assert tickets(second) == 2
    assert "took over" in second.log()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_imap_test_command_touches_nothing(
    dovecot: Dovecot, database_url: str, tmp_path: Path
) -> None:
    dovecot.append([make_mail(subject=f"waiting {i}") for i in range(3)])
    env = base_env(
        tmp_path / "data",
        database_url,
        MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        **imap_env(dovecot),
    )
    maildesk_cli(env, "db", "upgrade")
    out = maildesk_cli(env, "imap", "test")
    assert "OK (plain)" in out.stdout
    assert "3 message(s)" in out.stdout
    assert "create folder Processed" in out.stdout
    assert "ingest 3 message(s) from INBOX" in out.stdout
    assert dovecot.count("INBOX") == 3 and dovecot.count("Processed") == 0
    assert all(b"\\Seen" not in flags for flags in dovecot.flags("INBOX"))

    env["MAILDESK_IMAP_URL"] = dovecot.url(password="wrong")
    bad = maildesk_cli(env, "imap", "test", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "refused" in bad.stderr
    assert "Traceback" not in bad.stderr
