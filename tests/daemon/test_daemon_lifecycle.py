"""`maildesk run` as systemd runs it: sd_notify, SIGTERM, start-up signals, one
daemon per data directory, private files, /healthz with IMAP pollers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from maildesk.storage.models import Outbox, utcnow
from tests.conftest import Daemon, base_env, free_port, maildesk_cli, wait_for
from tests.daemon.test_durability import _descendants
from tests.mailkit import make_mail, send

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A socket like systemd's NOTIFY_SOCKET (short path: sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="md-") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(30)
        yield path, sock
        sock.close()


def _messages(
    sock: socket.socket, until: Callable[[list[dict[str, str]]], bool]
) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []
    while not until(got):
        data = sock.recv(4096).decode()
        got.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
    return got


@SQLITE_ONLY
def test_sd_notify_ready_watchdog_status_and_stop(
    start_daemon: Callable[..., Daemon], notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    d = start_daemon(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    got = _messages(sock, lambda m: any(x.get("READY") == "1" for x in m))
    ready = next(m for m in got if m.get("READY") == "1")
    assert "SMTP on 127.0.0.1:" in ready["STATUS"]
    # READY=1 came once SMTP listens: a mail is accepted right away.
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.sendmail("ann@example.org", ["support@localhost"], make_mail())
    after = _messages(sock, lambda m: sum(x.get("WATCHDOG") == "1" for x in m) >= 3)
    assert sum(x.get("WATCHDOG") == "1" for x in after) >= 3
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    stopping = _messages(sock, lambda m: any(x.get("STOPPING") == "1" for x in m))
    assert stopping
    assert d.proc.wait(timeout=30) == 0, d.log()


@SQLITE_ONLY
def test_sigterm_finishes_transactions_in_flight_and_refuses_new_ones(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon()
    assert d.proc is not None
    client = smtplib.SMTP("127.0.0.1", d.port, timeout=30)
    client.ehlo()
    assert client.mail("ann@example.org")[0] == 250
    assert client.rcpt("support@localhost")[0] == 250
    client.putcmd("data")
    assert client.getreply()[0] == 354
    raw = make_mail(subject="In flight at shutdown", message_id="<inflight@example.org>")
    half = len(raw) // 2
    client.send(raw[:half])  # the transaction is in flight ...
    d.proc.send_signal(signal.SIGTERM)

    def refused_with_421() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", d.port, timeout=5) as probe:
                probe.quit()
            return False  # still a normal session: the signal is not handled yet
        except smtplib.SMTPConnectError as exc:
            assert exc.smtp_code == 421, exc
            return True

    wait_for(refused_with_421)
    client.send(raw[half:] + b"\r\n.\r\n")  # ... and finishes after the signal
    code, reply = client.getreply()
    assert code == 250, reply
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.quit()
    assert d.proc.wait(timeout=30) == 0, d.log()
    assert d.scalar("select count(*) from ticket where subject = 'In flight at shutdown'") == 1
    # the last flush sent its confirmation and staff notification
    assert d.scalar("select count(*) from outbox where status = 'sent'") == 2, d.log()


@SQLITE_ONLY
def test_second_sigterm_exits_at_once(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    assert d.proc is not None
    client = smtplib.SMTP("127.0.0.1", d.port, timeout=30)
    client.ehlo()
    client.mail("ann@example.org")
    client.rcpt("support@localhost")  # a transaction that never finishes
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM: stopping" in d.log())
    d.proc.send_signal(signal.SIGTERM)
    # A graceful stop would wait for the open transaction and exit 0.
    assert d.proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now" in d.log()
    client.close()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "maildesk", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(li for li in status.splitlines() if li.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize(
    ("sig", "when"),
    [
        (signal.SIGTERM, "during imports"),
        (signal.SIGTERM, "as the port opens"),
        (signal.SIGINT, "as the port opens"),  # the first Ctrl-C used to be ignored
    ],
)
def test_a_signal_during_start_up_is_not_lost(tmp_path: Path, sig: int, when: str) -> None:
    port = free_port()
    env = base_env(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'data' / 'maildesk.db'}",
        MAILDESK_SMTP_LISTEN=f"127.0.0.1:{port}",
        MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
    )
    maildesk_cli(env, "db", "upgrade")
    log = tmp_path / "run.log"
    proc = _spawn(env, log)
    if when == "as the port opens":

        def port_open() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(port_open, timeout=60, interval=0.005)
    else:  # as soon as the signal is caught (the latch), while the imports still run
        wait_for(lambda: _catches_sigterm(proc.pid), interval=0.001)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "leaked" not in text, text
    name = signal.Signals(sig).name
    assert f"{name}: stopping" in text, text
    if when == "during imports":  # acted on at once, not only once start-up was over
        listening = text.find("listening for SMTP")
        assert listening == -1 or text.find(f"{name}: stopping") < listening, text


@SQLITE_ONLY
def test_a_second_run_on_the_same_data_dir_names_the_holder_and_touches_nothing(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon()
    assert d.proc is not None
    claimed_until = utcnow() + timedelta(minutes=10)  # the running daemon's lease
    with Session(d.engine) as session:
        row = Outbox(
            kind="confirmation",
            mail_from="support@localhost",
            recipients="ann@example.org",
            message_id="<claimed@maildesk>",
            raw=b"Subject: x\r\n\r\nx\r\n",
            created_at=utcnow(),
            next_attempt_at=claimed_until,
        )
        session.add(row)
        session.commit()
    before = d.scalar("select next_attempt_at from outbox where message_id = '<claimed@maildesk>'")
    env = dict(d.env, MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}")
    result = maildesk_cli(env, "run", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"PID {d.proc.pid}" in lines[0], result.stderr
    after = d.scalar("select next_attempt_at from outbox where message_id = '<claimed@maildesk>'")
    assert after == before


@SQLITE_ONLY
def test_data_directory_and_database_are_private(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    data = Path(d.env["MAILDESK_DATA_DIR"])
    database = Path(d.env["MAILDESK_DATABASE_URL"].split("///", 1)[1])
    send(d.port, make_mail())
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in (database, data / "maildesk.lock"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for suffix in ("-wal", "-shm"):  # while a connection is open
        path = Path(f"{database}{suffix}")
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@SQLITE_ONLY
def test_maildir_default_with_a_real_support_address_warns_once(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon(MAILDESK_SUPPORT_ADDRESS="support@example.com")
    wait_for(lambda: "listening for SMTP" in d.log())
    warnings = [line for line in d.log().splitlines() if "MAILDESK_OUTBOUND is unset" in line]
    assert len(warnings) == 1 and "support@example.com" in warnings[0]


@SQLITE_ONLY
def test_healthz_shows_the_imap_pollers(start_daemon: Callable[..., Daemon]) -> None:
    closed = free_port()  # nothing listens here: the poller cannot connect
    d = start_daemon(MAILDESK_IMAP_URL=f"imap://support:wrong@127.0.0.1:{closed}/INBOX")
    url = "http://" + d.env["MAILDESK_METRICS_LISTEN"] + "/healthz"

    def health() -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            return None
        imap = body.get("imap") or []
        return body if imap and imap[0]["state"] == "backoff" else None

    body = wait_for(health, timeout=60)
    assert body["status"] == "degraded"
    assert body["imap"][0]["mailbox"] == f"support@127.0.0.1:{closed}/INBOX"  # type: ignore[index]


def _nice(pid: int, tid: int) -> int:
    """A thread's nice value (Linux keeps one per thread): field 19 of its stat."""
    stat_line = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat_line.rsplit(")", 1)[1].split()[16])


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@SQLITE_ONLY
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux: nice per thread")
def test_the_whole_daemon_yields_the_cpu_to_the_smtp_intake(
    start_daemon: Callable[..., Daemon],
) -> None:
    """Under a burst, answering SMTP comes first: every thread of the daemon (those its
    libraries and executors started before it lowered itself included) and its parse
    workers run 19 nice steps below the intake process, which keeps the start value."""
    d = start_daemon()
    send(d.port, make_mail())
    wait_for(lambda: d.scalar("select count(*) from ticket") == 1)
    assert d.proc is not None
    base = os.getpriority(os.PRIO_PROCESS, 0)  # what the daemon was started with
    kids = _descendants(d.proc.pid)  # the intake, the forkserver and its parse workers
    intake = [k for k in kids if b"maildesk.intake.process" in
              Path(f"/proc/{k}/cmdline").read_bytes()]
    assert len(intake) == 1
    assert {_nice(intake[0], t) for t in _threads(intake[0])} == {base}
    lowered = min(base + 19, 19)
    for pid in [d.proc.pid, *(k for k in kids if k != intake[0])]:
        for tid in _threads(pid):
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                assert _nice(pid, tid) == lowered, (pid, tid)
