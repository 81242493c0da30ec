"""Crash durability: SIGKILL `maildesk run` mid-stream, restart it, let the client retry.

DESIGN invariants 1-3, end to end with the real daemon as a subprocess:

1. every mail that got 250 is in the database (exactly once);
2. mails the client had to retry (no 250 because the daemon died) become one ticket
   each, however many times they reached the spool;
3. every ticket gets exactly one confirmation row, and the Maildir outbound holds each
   outbox mail once. The outbox is at-least-once: the single mail the sender may have
   been writing when the daemon died (Maildir file renamed into new/, `sent` not yet
   committed) is delivered again after the restart. The test allows exactly that one
   duplicate, and only for a row whose lease the killed daemon held.

The client behaves like an MTA: 4 threads, each with a persistent SMTP connection,
one mail per transaction; anything but 250 (connection refused or reset, 4xx) is
retried after a short pause until it is accepted. A 5xx fails the test.

The kill lands at a random point (logged seed; rerun one with MAILDESK_DURABILITY_SEED)
after `kill_after` mails were accepted, so it can hit the spool writer, the pipeline
and the outbox sender at any step.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import logging
import mailbox
import os
import random
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from maildesk.storage.models import Outbox, utcnow
from maildesk.work.outbox import LEASE
from tests.conftest import Daemon, maildesk_cli, wait_for
from tests.mailkit import make_mail

log = logging.getLogger(__name__)

MAILS = 300
CLIENTS = 4
RETRY_PAUSE = 0.05  # seconds between attempts of one client while the daemon is down
CLIENT_DEADLINE = 120.0  # a mail not accepted by then fails the test


@dataclass
class Ledger:
    """What the client saw, shared by the client threads (guarded by `lock`)."""

    accepted: dict[int, str] = field(default_factory=dict)  # mail index -> 250 reply text
    attempts: Counter[int] = field(default_factory=Counter)
    # Mail whose DATA went out without a 250 coming back: the daemon may have stored it.
    in_doubt: set[int] = field(default_factory=set)
    refused: list[tuple[int, int, str]] = field(default_factory=list)  # 5xx: a bug
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # With `hold_at`, the clients start no new mail once that many were accepted, until
    # `killed` is set: the SIGKILL always lands mid-stream, however fast the intake answers.
    hold_at: int | None = None
    killed: threading.Event = field(default_factory=threading.Event)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def _mail(seed: int, i: int) -> tuple[str, str, bytes]:
    sender = f"customer{i}@durability.example"
    message_id = f"durability-{seed}-{i}@client.example"
    raw = make_mail(
        sender=sender,
        subject=f"Durability check {i}",
        body=f"Hello,\nthis is mail {i} of {MAILS} (seed {seed}).\n",
        message_id=f"<{message_id}>",
    )
    return sender, message_id, raw


def _client(
    port: int,
    mails: list[tuple[int, str, bytes]],
    ledger: Ledger,
    deadline: float,
) -> None:
    """Send each mail until it gets 250, like an MTA: retry on anything temporary."""
    conn: smtplib.SMTP | None = None

    def drop() -> None:
        nonlocal conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        conn = None

    for index, sender, raw in mails:
        if ledger.hold_at is not None and ledger.count() >= ledger.hold_at:
            ledger.killed.wait(max(0.0, deadline - time.monotonic()))
        while True:
            if time.monotonic() > deadline:
                drop()
                return
            with ledger.lock:
                ledger.attempts[index] += 1
            data_sent = False
            try:
                if conn is None:
                    conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
                    conn.ehlo()
                code, reply = conn.mail(sender)
                if code == 250:
                    code, reply = conn.rcpt("support@localhost")
                if code == 250:
                    data_sent = True
                    code, reply = conn.data(raw)
                    if code == 250:
                        with ledger.lock:
                            ledger.accepted[index] = reply.decode(errors="replace")
                        break
                    raise smtplib.SMTPDataError(code, reply)
                conn.rset()
                raise smtplib.SMTPResponseException(code, reply)
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code >= 500:
                    with ledger.lock:
                        ledger.refused.append((index, exc.smtp_code, str(exc.smtp_error)))
                    drop()
                    return
                with ledger.lock:
                    ledger.errors[f"{exc.smtp_code}"] += 1
                    if data_sent:
                        ledger.in_doubt.add(index)
            except (OSError, smtplib.SMTPException) as exc:
                # refused, reset, or disconnected: the daemon is gone (or going)
                with ledger.lock:
                    ledger.errors[type(exc).__name__] += 1
                    if data_sent:
                        ledger.in_doubt.add(index)
                drop()
            time.sleep(RETRY_PAUSE)
    if conn is not None:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            drop()


def _descendants(pid: int) -> set[int]:
    """Child processes (recursively) of pid, from /proc (Linux)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _held_leases(daemon: Daemon) -> dict[int, str]:
    """Outbox rows still queued but claimed (lease in the future): the dead daemon's claims."""
    with Session(daemon.engine) as session:
        rows = session.exec(
            select(Outbox.id, Outbox.message_id).where(
                Outbox.status == "queued", col(Outbox.next_attempt_at) > utcnow()
            )
        ).all()
    return {int(i): m for i, m in rows if i is not None}


def _expire_leases(daemon: Daemon, ids: set[int]) -> None:
    """Fast-forward the lease clock (outbox.LEASE, 5 min) for the dead daemon's claims only.

    The daemon is down while this runs, so no live sender holds any of these rows.
    """
    if not ids:
        return
    with Session(daemon.engine) as session:
        for row in session.exec(select(Outbox).where(col(Outbox.id).in_(ids))).all():
            row.next_attempt_at = utcnow()
            session.add(row)
        session.commit()


def _state(daemon: Daemon) -> str:
    """Where things stand, for a failure message."""
    inbound = daemon.query("select status, count(*) from inbound group by status")
    outbox = daemon.query("select status, count(*) from outbox group by status")
    tickets = daemon.scalar("select count(*) from ticket")
    alive = daemon.proc is not None and daemon.proc.poll() is None
    return (
        f"inbound {dict(inbound)}, tickets {tickets}, outbox {dict(outbox)}, "
        f"daemon {'running' if alive else 'exited'}; log tail:\n{daemon.log()[-3000:]}"
    )


def _settle(daemon: Daemon, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        wait_for(predicate, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"{what}: not within {timeout:.0f} s; {_state(daemon)}") from None


def _maildir_message_ids(path: Path) -> Counter[str]:
    box = mailbox.Maildir(str(path), create=False)
    ids: Counter[str] = Counter()
    for key in box.iterkeys():
        msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        ids[str(msg["Message-ID"]).strip().strip("<>")] += 1
    return ids


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    start_daemon: Callable[..., Daemon], backend: str
) -> None:
    seed = int(os.environ.get("MAILDESK_DURABILITY_SEED") or random.SystemRandom().getrandbits(32))
    rng = random.Random(seed)
    kill_after = rng.randint(MAILS // 10, MAILS * 9 // 10)
    kill_jitter = rng.uniform(0.0, 0.05)
    down_for = rng.uniform(0.0, 0.5)
    print(
        f"durability[{backend}]: seed={seed} kill_after={kill_after} "
        f"jitter={kill_jitter:.3f}s down_for={down_for:.3f}s"
    )
    started = time.monotonic()

    daemon = start_daemon(MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="10000")
    data_dir = Path(daemon.env["MAILDESK_DATA_DIR"])
    mails = [_mail(seed, i) for i in range(MAILS)]
    ledger = Ledger(hold_at=kill_after + CLIENTS * 2)
    deadline = time.monotonic() + CLIENT_DEADLINE
    shares = [
        [(i, mails[i][0], mails[i][2]) for i in range(c, MAILS, CLIENTS)] for c in range(CLIENTS)
    ]
    threads = [
        threading.Thread(
            target=_client, args=(daemon.port, share, ledger, deadline), name=f"client-{n}"
        )
        for n, share in enumerate(shares)
    ]
    for t in threads:
        t.start()

    # Kill at a random moment mid-stream: after kill_after mails were accepted, plus jitter.
    wait_for(lambda: ledger.count() >= kill_after, timeout=CLIENT_DEADLINE, interval=0.001)
    time.sleep(kill_jitter)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    children = _descendants(pid)
    daemon.stop(signal.SIGKILL)
    ledger.killed.set()
    killed_at = time.monotonic()
    accepted_before_kill = ledger.count()
    assert daemon.proc.returncode == -signal.SIGKILL
    assert accepted_before_kill < MAILS, f"the kill came after the last mail; seed {seed}"

    # The dead daemon's outbox claims and its worker processes.
    leases = _held_leases(daemon)
    _expire_leases(daemon, set(leases))
    wait_for(lambda: not any(_alive(c) for c in children), timeout=10)

    time.sleep(down_for)
    daemon.start()
    restarted_at = time.monotonic()
    for t in threads:
        t.join(timeout=CLIENT_DEADLINE + 10)
    assert not any(t.is_alive() for t in threads)
    client_done = time.monotonic()

    print(
        f"durability[{backend}]: accepted before kill={accepted_before_kill}, "
        f"in doubt={len(ledger.in_doubt)}, retried mails="
        f"{sum(1 for n in ledger.attempts.values() if n > 1)}, errors={dict(ledger.errors)}, "
        f"leases held by the dead daemon={len(leases)}"
    )
    assert ledger.refused == [], f"5xx for valid mail: {ledger.refused[:5]}"
    assert sorted(ledger.accepted) == list(range(MAILS)), (
        f"not accepted within {CLIENT_DEADLINE} s: "
        f"{sorted(set(range(MAILS)) - set(ledger.accepted))}"
    )

    # Everything drains: the spool, then the outbox.
    _settle(
        daemon,
        lambda: (
            daemon.scalar("select count(*) from inbound where status = 'new'") == 0
            and daemon.scalar("select count(*) from ticket") == MAILS
        ),
        60,
        "the spool drains into 300 tickets",
    )
    tickets_at = time.monotonic()
    _settle(
        daemon,
        lambda: daemon.scalar("select count(*) from outbox where status <> 'sent'") == 0,
        30,
        "the outbox drains",
    )
    outbox_at = time.monotonic()

    # Invariant 1 + 2: each Message-ID is in `message` exactly once; one ticket per mail.
    rows = daemon.query(
        "select dedupe_key, count(*) from message where direction = 'in' group by dedupe_key"
    )
    counts = {key: n for key, n in rows}
    expected = {f"mid:{mid}" for _, mid, _ in mails}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert daemon.scalar("select count(*) from ticket") == MAILS
    per_ticket = daemon.query(
        "select ticket_id, count(*) from message where direction = 'in' group by ticket_id"
    )
    assert len(per_ticket) == MAILS and {n for _, n in per_ticket} == {1}

    # The spool: every row finished; extra rows only from mails that were in doubt.
    statuses = dict(daemon.query("select status, count(*) from inbound group by status"))
    assert set(statuses) <= {"done", "duplicate"}, statuses
    assert statuses.get("done") == MAILS
    duplicates = statuses.get("duplicate", 0)
    assert duplicates <= len(ledger.in_doubt), (duplicates, ledger.in_doubt)
    assert (
        daemon.scalar(
            "select count(*) from inbound i where i.status = 'duplicate' and i.ticket_id is null"
        )
        == 0
    )
    # a duplicate points at the ticket that holds the original
    assert (
        daemon.scalar(
            "select count(*) from inbound i join message m on m.dedupe_key = i.dedupe_key "
            "where i.status = 'duplicate' and m.ticket_id <> i.ticket_id"
        )
        == 0
    )

    # Invariant 3: exactly one confirmation per ticket, addressed to its requester.
    assert daemon.scalar("select count(*) from outbox where kind = 'confirmation'") == MAILS
    confirmations = daemon.query(
        "select t.id, t.requester, count(o.id) from ticket t "
        "left join outbox o on o.ticket_id = t.id and o.kind = 'confirmation' "
        "group by t.id, t.requester"
    )
    assert len(confirmations) == MAILS
    bad = [(t, r, n) for t, r, n in confirmations if n != 1]
    assert bad == [], bad[:5]
    assert {r for _, r, _ in confirmations} == {sender for sender, _, _ in mails}
    assert (
        daemon.scalar(
            "select count(*) from outbox o join ticket t on t.id = o.ticket_id "
            "where o.kind = 'confirmation' and o.rcpt <> t.requester"
        )
        == 0
    )

    # The Maildir: every outbox mail delivered; at most the one in flight at the kill twice.
    time.sleep(0.5)  # a stray second send would land in this window
    outbox = {m: k for m, k in daemon.query("select message_id, kind from outbox")}
    delivered = _maildir_message_ids(data_dir / "sent")
    assert set(delivered) == set(outbox), "Maildir and outbox disagree"
    twice = {m for m, n in delivered.items() if n > 1}
    assert all(n <= 2 for n in delivered.values()), delivered.most_common(3)
    assert len(twice) <= 1, f"more than the one in-flight mail delivered twice: {twice}"
    assert twice <= set(leases.values()), f"duplicate delivery of a row not in flight: {twice}"
    confirmation_ids = {m for m, k in outbox.items() if k == "confirmation"}
    assert len(confirmation_ids) == MAILS
    if twice:
        print(f"durability[{backend}]: delivered twice (in flight at the kill): {twice}")

    # What a user sees.
    listed = json.loads(maildesk_cli(daemon.env, "tickets", "--json", "--limit", "1000").stdout)
    assert len(listed) == MAILS
    assert {t["requester"] for t in listed} == {sender for sender, _, _ in mails}

    print(
        f"durability[{backend}]: seconds since start: killed {killed_at - started:.1f}, "
        f"restarted {restarted_at - started:.1f}, clients done {client_done - started:.1f}, "
        f"tickets done {tickets_at - started:.1f}, outbox drained {outbox_at - started:.1f}, "
        f"all checks {time.monotonic() - started:.1f}; duplicate inbound rows {duplicates}; "
        f"outbox lease {LEASE / timedelta(seconds=1):.0f} s"
    )
