"""Outbox delivery through an SMTP relay: mails/s and connections for a queue of mails.

A local aiosmtpd sink is the relay; `--delay-ms` makes it answer every command that
much later, as a relay across a network does. The outbox sender of this tree (or, with
`--baseline REV`, of a git worktree of REV, in a subprocess of this venv) delivers a
queue of N mails from a fresh SQLite database until none is left, alternating runs.

    .venv/bin/python bench/outbox_relay.py --mails 1000 --baseline REV [--delay-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The tree under test: this one, or the baseline worktree (the orchestrator sets it).
TREE = Path(os.environ.get("MAILDESK_BENCH_TREE") or REPO)
sys.path.insert(0, str(TREE))


class Sink:
    """The relay: counts connections and mails, answers each command after `delay`."""

    def __init__(self, delay: float) -> None:
        from aiosmtpd.controller import Controller

        self.connections = 0
        self.mails = 0
        sink = self

        class Handler:
            async def handle_EHLO(
                self, server: Any, session: Any, envelope: Any, hostname: str,
                responses: list[str],
            ) -> list[str]:
                await asyncio.sleep(delay)
                session.host_name = hostname
                sink.connections += 1
                return responses

            async def handle_MAIL(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                await asyncio.sleep(delay)
                envelope.mail_from = address
                return "250 OK"

            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                await asyncio.sleep(delay)
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                await asyncio.sleep(delay)
                sink.mails += 1
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


def deliver(n: int, delay: float) -> dict[str, float]:
    """One run against the tree on sys.path: queue n mails, send them all."""
    from sqlmodel import Session, col, func, select

    from maildesk.storage.db import make_engine, upgrade
    from maildesk.storage.models import Outbox, utcnow
    from maildesk.work.outbox import OutboxSender
    from maildesk.work.transports import SmtpTransport

    work = Path(tempfile.mkdtemp(prefix="outbox-relay-bench-"))
    sink = Sink(delay)
    sink.controller.start()
    try:
        engine = make_engine(f"sqlite:///{work / 'md.db'}")
        upgrade(engine)
        body = b"x" * 76 + b"\r\n"
        with Session(engine) as session:
            for i in range(n):
                session.add(Outbox(
                    kind="confirmation", mail_from="support@localhost",
                    recipients=[f"c{i}@example.org"], message_id=f"<bench{i}@maildesk>",
                    raw=f"Message-ID: <bench{i}@maildesk>\r\nSubject: {i}\r\n\r\n".encode()
                    + body * 50,
                    created_at=utcnow(), next_attempt_at=utcnow(),
                ))
            session.commit()
        sender = OutboxSender(engine, SmtpTransport("127.0.0.1", sink.port))
        cpu, started = time.process_time(), time.perf_counter()

        def queued() -> int:
            with Session(engine) as session:
                found = session.exec(
                    select(func.count()).select_from(Outbox).where(col(Outbox.status) == "queued")
                ).one()
            return int(found)

        while queued():
            asyncio.run(sender.flush())
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        engine.dispose()
    finally:
        sink.controller.stop()
        shutil.rmtree(work, ignore_errors=True)
    if sink.mails != n:
        sys.exit(f"FAILED: the relay got {sink.mails} mails, not {n}")
    return {
        "mails/s": n / elapsed,
        "relay connections": float(sink.connections),
        "CPU ms per mail (sender and relay)": cpu * 1000 / n,
    }


def compare(rev: str, n: int, rounds: int, delay_ms: float) -> None:
    from bench.abtest import alternate, print_medians

    args = ["--mails", str(n), "--delay-ms", str(delay_ms), "--json"]
    results = alternate(__file__, rev, rounds, args)
    print_medians(f"Outbox to a relay ({delay_ms:g} ms per command), {n} mails", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="the relay answers each command this much later")
    parser.add_argument("--baseline", metavar="GIT-REV", help="compare with this revision")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs with --baseline")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        compare(args.baseline, args.mails, args.rounds, args.delay_ms)
        return
    figures = deliver(args.mails, args.delay_ms / 1000)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:<36} {value:8.1f}")


if __name__ == "__main__":
    main()
