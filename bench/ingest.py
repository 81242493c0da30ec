"""SMTP intake throughput and latency of a running `maildesk run`, against a no-op baseline.

    .venv/bin/python bench/ingest.py [--mails 2000] [--clients 4] [--size 4096]
                                     [--database-url URL] [--warmup 40] [--keep]

What it does, in one run:

1. a temp data dir, `maildesk db upgrade`, then `maildesk run` as a subprocess (SQLite by
   default: WAL + synchronous=FULL, the durable default; or --database-url, which should
   be an empty database: the bench upgrades it and counts only what it adds);
2. CLIENTS threads, each with its own persistent smtplib connection, send MAILS distinct
   mails of ~SIZE bytes (one mail per SMTP transaction: MAIL, RCPT, DATA);
3. then the same client load against a no-op aiosmtpd server (a Controller whose
   handler answers 250 at once) in a subprocess on another port.

Figures:

* latency = the DATA command to its final 250: ``smtplib.SMTP.data(raw)`` timed alone
  (DATA, 354, the message bytes, the final reply). MAIL/RCPT round trips are not in it,
  but they are in msgs/s;
* msgs/s = mails / wall time from the first MAIL to the last 250, over all clients;
* end-to-end = mails / time from the first MAIL until every mail is a ticket
  (processed by the pipeline, confirmation queued in the outbox);
* spool commits = distinct inbound.received_at (one per group commit: the spool writer
  stamps every row of a batch with one time); pipeline commits = distinct
  inbound.processed_at (the same, for the processor's batches);
* peak RSS = VmHWM of the daemon process (and, separately, the largest of its children:
  the parse workers).

A warm-up of WARMUP mails (not measured) goes to each server first.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUPPORT = "support@localhost"
WORDS = [
    "printer",
    "order",
    "delivery",
    "account",
    "password",
    "login",
    "refund",
    "shipping",
    "broken",
    "screen",
    "please",
    "help",
    "urgent",
    "thanks",
    "regards",
    "support",
    "update",
    "install",
    "error",
    "message",
    "mail",
]


@dataclass
class LoadResult:
    name: str
    mails: int
    seconds: float  # first MAIL to last 250
    latencies: list[float] = field(default_factory=list)  # DATA -> 250, seconds
    failures: list[str] = field(default_factory=list)
    started_at: float = 0.0  # time.monotonic() of the first MAIL
    finished_at: float = 0.0

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Percentile in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def make_mails(count: int, size: int, tag: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """Distinct mails of about `size` bytes: distinct senders and Message-IDs."""
    mails = []
    for i in range(count):
        sender = f"bench{i}.{tag}@customers.example"
        msg = EmailMessage()
        msg["From"] = f"Bench Customer {i} <{sender}>"
        msg["To"] = SUPPORT
        msg["Subject"] = f"Bench {tag} {i}: {' '.join(rng.choices(WORDS, k=5))}"
        msg["Message-ID"] = f"<bench-{tag}-{i}-{rng.getrandbits(48):x}@customers.example>"
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
        head = len(msg.as_bytes())
        lines = []
        length = head + 60
        while length < size:
            line = " ".join(rng.choices(WORDS, k=10))
            lines.append(line)
            length += len(line) + 1
        msg.set_content("Hello,\n" + "\n".join(lines) + "\n")
        # CRLF line ends, as an MTA sends them (smtplib leaves bytes as they are)
        mails.append((sender, msg.as_bytes().replace(b"\n", b"\r\n")))
    return mails


def run_load(name: str, port: int, mails: Sequence[tuple[str, bytes]], clients: int) -> LoadResult:
    """CLIENTS threads, one persistent connection each, one mail per transaction."""
    shares = [list(mails[c::clients]) for c in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    barrier = threading.Barrier(clients + 1)
    ends = [0.0] * clients

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as conn:
            conn.ehlo()
            barrier.wait()
            for sender, raw in shares[n]:
                code, reply = conn.mail(sender)
                if code == 250:
                    code, reply = conn.rcpt(SUPPORT)
                if code != 250:
                    failures.append(f"{code} {reply!r}")
                    conn.rset()
                    continue
                t0 = time.perf_counter()
                code, reply = conn.data(raw)
                latencies[n].append(time.perf_counter() - t0)
                if code != 250:
                    failures.append(f"{code} {reply!r}")
            ends[n] = time.monotonic()

    threads = [
        threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(clients)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    finished = max(ends)
    result = LoadResult(
        name, len(mails), finished - started, [x for part in latencies for x in part], failures
    )
    result.started_at, result.finished_at = started, finished
    return result


def vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.append(kid)
                    todo.append(kid)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the no-op baseline server ------------------------------------------------------------


def noop_server(port: int) -> None:
    """Run in a subprocess: aiosmtpd answering 250 to everything, at once."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 2.0.0 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


# -- the daemon ---------------------------------------------------------------------------


class Daemon:
    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDESK_")}
        self.env.update(
            MAILDESK_DATA_DIR=str(data_dir),
            MAILDESK_SMTP_LISTEN=f"127.0.0.1:{self.port}",
            MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
            MAILDESK_RULES=str(REPO / "rules.yaml"),
            MAILDESK_SLA=str(REPO / "sla.yaml"),
            MAILDESK_TEMPLATES=str(REPO / "templates"),
            MAILDESK_SECRET="bench-secret",
            MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="1000000",
            MAILDESK_LOG_LEVEL="WARNING",
        )
        if database_url:
            self.env["MAILDESK_DATABASE_URL"] = database_url
        self.database_url = database_url or f"sqlite:///{data_dir / 'maildesk.db'}"
        self.log_path = data_dir.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "maildesk", *args], env=self.env, check=True, timeout=300
        )

    def start(self) -> None:
        self.cli("db", "upgrade")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maildesk", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Counts:
    tickets: int
    inbound_new: int
    outbox_queued: int
    max_inbound: int


def counts(engine: Any, after_inbound: int = 0) -> Counts:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select (select count(*) from ticket), "
                "(select count(*) from inbound where status = 'new'), "
                "(select count(*) from outbox where status = 'queued'), "
                "(select coalesce(max(id), 0) from inbound)"
            )
        ).one()
    return Counts(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def commit_counts(engine: Any, after_inbound: int) -> tuple[int, int, int]:
    """(rows, distinct received_at = spool commits, distinct processed_at = pipeline commits)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select count(*), count(distinct received_at), count(distinct processed_at) "
                "from inbound where id > :after"
            ),
            {"after": after_inbound},
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096, help="bytes per mail (about)")
    parser.add_argument("--warmup", type=int, default=40, help="unmeasured mails first")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temp dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the daemon during the measured load with py-spy (speedscope JSON)",
    )
    parser.add_argument("--noop-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.noop_server:
        noop_server(args.noop_server)
        return 0

    sys.path.insert(0, str(REPO))
    from maildesk.db import make_engine

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-"))
    daemon = Daemon(tmp / "data", args.database_url)
    noop: subprocess.Popen[bytes] | None = None
    try:
        warm = make_mails(args.warmup, args.size, "warm", rng)
        mails = make_mails(args.mails, args.size, "run", rng)
        avg = sum(len(raw) for _, raw in mails) / len(mails)
        print(
            f"{args.mails} mails of {avg:.0f} bytes on average, {args.clients} clients, "
            f"{os.cpu_count()} CPUs; database {daemon.database_url.split('://')[0]}; "
            f"temp dir {tmp}",
            flush=True,
        )

        # maildesk
        daemon.start()
        assert daemon.proc is not None
        engine = make_engine(daemon.database_url)
        before = counts(engine)
        if args.warmup:
            run_load("warm-up", daemon.port, warm, args.clients)
            deadline = time.monotonic() + 120
            while counts(engine).tickets < before.tickets + args.warmup:
                if time.monotonic() > deadline:
                    raise SystemExit("warm-up mails never became tickets")
                time.sleep(0.05)
        start_counts = counts(engine)
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(daemon.proc.pid),
                    "--nonblocking",
                    "--threads",
                    "--format",
                    "raw" if args.py_spy.endswith(".txt") else "speedscope",
                    "--rate",
                    "50",
                    "--output",
                    args.py_spy,
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let py-spy attach
        cpu0 = cpu_seconds(daemon.proc.pid)
        md = run_load("maildesk", daemon.port, mails, args.clients)
        cpu_intake = cpu_seconds(daemon.proc.pid) - cpu0
        backlog = counts(engine)
        want = start_counts.tickets + args.mails
        deadline = time.monotonic() + 600
        while True:
            now_counts = counts(engine)
            if now_counts.tickets >= want and now_counts.inbound_new == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {now_counts.tickets - start_counts.tickets} tickets")
            time.sleep(0.02)
        e2e_done = time.monotonic()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        cpu_all = cpu_seconds(daemon.proc.pid) - cpu0
        rows, spool_commits, pipeline_commits = commit_counts(engine, start_counts.max_inbound)
        kids = descendants(daemon.proc.pid)
        rss_main = vm_hwm_kb(daemon.proc.pid)
        rss_kid = max((vm_hwm_kb(k) for k in kids), default=0)
        engine.dispose()
        daemon.stop()

        # the no-op baseline, same client load
        noop_port = free_port()
        noop = subprocess.Popen(
            [sys.executable, __file__, "--noop-server", str(noop_port)],
        )
        wait_port(noop_port, noop)
        if args.warmup:
            run_load("warm-up", noop_port, warm, args.clients)
        base = run_load("no-op aiosmtpd", noop_port, mails, args.clients)
    finally:
        daemon.stop()
        if noop and noop.poll() is None:
            noop.send_signal(signal.SIGTERM)
            noop.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    e2e_seconds = e2e_done - md.started_at
    print()
    print(f"{'server':<26}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}")
    for r in (md, base):
        print(
            f"{r.name:<26}{r.rate:>10.1f}{r.pct(50):>10.2f}{r.pct(99):>10.2f}"
            f"{max(r.latencies, default=0) * 1000:>10.2f}{len(r.failures):>8}"
        )
    print(
        f"{'maildesk end-to-end':<26}{args.mails / e2e_seconds:>10.1f}"
        f"{'':>10}{'':>10}{'':>10}{'':>8}   (first MAIL -> last ticket: {e2e_seconds:.2f} s)"
    )
    print()
    ratio = md.rate / base.rate if base.rate else 0.0
    print(
        f"ratio maildesk/no-op: throughput {ratio:.0%} (aim: at least 40%), "
        f"p50 latency x{md.pct(50) / base.pct(50):.1f}, p99 x{md.pct(99) / base.pct(99):.1f}"
    )
    print(
        f"intake {md.seconds:.2f} s; pipeline backlog when the last 250 came: "
        f"{backlog.inbound_new} new inbound rows; all tickets {e2e_done - md.finished_at:.2f} s "
        f"later"
    )
    print(
        f"commits for {rows} mails: spool {spool_commits} "
        f"({rows / max(spool_commits, 1):.1f} mails per commit/fsync), "
        f"pipeline {pipeline_commits} ({rows / max(pipeline_commits, 1):.1f} per commit)"
    )
    print(
        f"daemon CPU: {cpu_intake:.1f} s during intake ({cpu_intake / md.seconds:.0%} of one "
        f"core), {cpu_all:.1f} s until all tickets (main process; parse workers not counted)"
    )
    print(
        f"peak RSS (VmHWM): daemon {rss_main / 1024:.0f} MiB, largest child "
        f"{rss_kid / 1024:.0f} MiB ({len(kids)} children)"
    )
    failures = md.failures + base.failures
    if failures:
        print(f"{len(failures)} mails refused, e.g. {failures[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
