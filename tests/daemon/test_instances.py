"""Several `maildesk run` on one PostgreSQL share the work (DESIGN: Storage).

Two daemons, each with its own data directory and SMTP port, on one database.
Clients split the mails across both ports and retry like an MTA. One daemon is
SIGKILLed mid-way and started again. In the end: one ticket and one
confirmation per mail, none twice, whichever daemon took or finished it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, base_env, free_port, maildesk_cli, new_database_url, wait_for
from tests.daemon.test_durability import Ledger, _alive, _client, _descendants
from tests.mailkit import make_mail

MAILS = 600  # 1,000 takes ~85 s on a shared 2-core machine; the property is the same
CLIENTS_PER_DAEMON = 3
CLIENT_DEADLINE = 180.0


def _daemon(tmp_path: Path, name: str, database_url: str) -> Daemon:
    port = free_port()
    env = base_env(
        tmp_path / name,
        database_url,
        MAILDESK_SMTP_LISTEN=f"127.0.0.1:{port}",
        MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="100000",
    )
    return Daemon(env, port, tmp_path / f"{name}.log")


def _sigkill(daemon: Daemon) -> None:
    """SIGKILL the daemon and its parser processes, as the OOM killer would."""
    assert daemon.proc is not None
    children = _descendants(daemon.proc.pid)
    daemon.proc.kill()
    daemon.proc.wait()
    for pid in children:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_two_daemons_share_the_work_and_survive_a_sigkill(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = new_database_url("postgresql", tmp_path, request)
    a = _daemon(tmp_path, "a", database_url)
    b = _daemon(tmp_path, "b", database_url)
    maildesk_cli(a.env, "db", "upgrade")
    a.start()
    b.start()
    request.addfinalizer(lambda: [d.stop() for d in (a, b)] and None)

    mails = [
        (
            i,
            f"customer{i}@instances.example",
            make_mail(
                sender=f"customer{i}@instances.example",
                subject=f"Shared work {i}",
                message_id=f"<instances-{i}@client.example>",
            ),
        )
        for i in range(MAILS)
    ]
    ledger = Ledger()
    deadline = time.monotonic() + CLIENT_DEADLINE
    shares: list[tuple[int, list[tuple[int, str, bytes]]]] = []
    for d_index, daemon in enumerate((a, b)):
        mine = mails[d_index::2]
        for c in range(CLIENTS_PER_DAEMON):
            shares.append((daemon.port, mine[c::CLIENTS_PER_DAEMON]))
    threads = [
        threading.Thread(target=_client, args=(port, share, ledger, deadline), daemon=True)
        for port, share in shares
    ]
    for t in threads:
        t.start()

    wait_for(lambda: ledger.count() >= MAILS // 3, timeout=CLIENT_DEADLINE)
    _sigkill(a)  # mid-way: its clients see resets and refusals, and retry
    a.start()  # the same data directory, the same database
    for t in threads:
        t.join(timeout=CLIENT_DEADLINE)
    assert not ledger.refused, ledger.refused[:5]
    assert ledger.count() == MAILS, f"accepted {ledger.count()} of {MAILS}: {ledger.errors}"

    def settled() -> bool:
        return (
            a.scalar("select count(*) from inbound where status = 'new'") == 0
            and a.scalar("select count(*) from ticket") >= MAILS
        )

    wait_for(settled, timeout=120, interval=0.2)
    assert a.scalar("select count(*) from ticket") == MAILS
    assert a.scalar("select count(distinct requester) from ticket") == MAILS
    confirmations = a.query(
        "select ticket_id, count(*) from outbox where kind = 'confirmation' group by ticket_id"
    )
    assert len(confirmations) == MAILS and all(n == 1 for _, n in confirmations)
    assert a.scalar("select count(*) from outbox where status = 'failed'") == 0
    # Both daemons did part of the work (each writes the outbound Maildir of its data dir).
    for daemon in (a, b):
        sent = Path(daemon.env["MAILDESK_DATA_DIR"]) / "sent" / "new"
        assert sent.is_dir() and any(sent.iterdir()), daemon.log()
    print(f"instances: client errors while one daemon was down: {dict(ledger.errors)}")
