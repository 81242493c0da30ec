"""SMTP intake throughput and latency of a running `maildesk run`, against a no-op baseline.

    .venv/bin/python bench/ingest.py [--mails 2000] [--clients 4] [--size 4096]
                                     [--database-url URL] [--warmup 40] [--keep]
                                     [--rate MAILS-PER-SECOND]
                                     [--baseline GIT-REV [--rounds 2]]

--baseline REV: the same load against a `git worktree` of REV (a temp dir; its code
first on PYTHONPATH with this venv, its rules/sla/templates), runs alternating
(A B A B ...), each on a fresh database; prints every figure of both and the ratio
this/baseline (the median of each side's runs), and the SQL statements per new
ticket / reply / duplicate of both trees (bench/sqlprobe.py).

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
  the parse workers); RSS at 10% and at 100% of the tickets (flat over a long run?);
* delivered = mails / time from the first MAIL until the outbox is empty (every
  confirmation and notification delivered to the Maildir);
* CPU ms per new ticket = CPU (user + system) of the daemon and its children (the
  parse workers) from the first MAIL until the outbox is empty, per mail;
* first / last 10%: tickets per second while the first and the last tenth of the mails
  became tickets, the CPU ms per ticket of the daemon and its children in those tenths,
  and intake (250s) per second over the first and the last tenth. A burst (the default)
  makes the first tenth share the CPU with intake; `--rate R` sends at a steady R mails/s
  instead, so the two tenths run alike and differ only in what is in the database:
  does the cost per mail grow with it?

A warm-up of WARMUP mails (not measured) goes to each server first.
"""

from __future__ import annotations

import argparse
import itertools
import json
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
    done_at: list[float] = field(default_factory=list)  # time.monotonic() of each 250

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


def run_load(
    name: str, port: int, mails: Sequence[tuple[str, bytes]], clients: int, rate: float = 0.0
) -> LoadResult:
    """CLIENTS threads, one persistent connection each, one mail per transaction; with a
    `rate`, mail k of the run is not started before k / rate seconds."""
    shares = [list(mails[c::clients]) for c in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    barrier = threading.Barrier(clients + 1)
    ends = [0.0] * clients
    done_at: list[list[float]] = [[] for _ in range(clients)]
    started_at = [time.monotonic()]

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as conn:
            conn.ehlo()
            barrier.wait()
            for j, (sender, raw) in enumerate(shares[n]):
                if rate:
                    wait = started_at[0] + (j * clients + n) / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
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
                done_at[n].append(time.monotonic())
                if code != 250:
                    failures.append(f"{code} {reply!r}")
            ends[n] = time.monotonic()

    threads = [
        threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(clients)
    ]
    for t in threads:
        t.start()
    started_at[0] = time.monotonic() + 0.01  # the clients pass the barrier just before
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    finished = max(ends)
    result = LoadResult(
        name, len(mails), finished - started, [x for part in latencies for x in part], failures
    )
    result.started_at, result.finished_at = started, finished
    result.done_at = sorted(x for part in done_at for x in part)
    return result


def vm_hwm_kb(pid: int, field: str = "VmHWM:") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
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
    """`maildesk run` of a source tree (this checkout, or a baseline worktree)."""

    def __init__(self, data_dir: Path, database_url: str | None, tree: Path = REPO) -> None:
        self.port = free_port()
        self.tree = tree
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDESK_")}
        self.env.update(
            PYTHONPATH=os.pathsep.join(
                [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            MAILDESK_DATA_DIR=str(data_dir),
            MAILDESK_SMTP_LISTEN=f"127.0.0.1:{self.port}",
            MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
            MAILDESK_RULES=str(tree / "rules.yaml"),
            MAILDESK_SLA=str(tree / "sla.yaml"),
            MAILDESK_TEMPLATES=str(tree / "templates"),
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
            [sys.executable, "-m", "maildesk", *args],
            env=self.env,
            cwd=self.tree,
            check=True,
            timeout=300,
        )

    def start(self) -> None:
        self.cli("db", "upgrade")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maildesk", "run"],
            env=self.env,
            cwd=self.tree,
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
    tickets: int  # the highest ticket id (cheap on a large table; tickets are never deleted)
    inbound_new: int
    outbox_queued: int
    max_inbound: int


def tickets_made(engine: Any) -> int:
    """The highest ticket id: what the watchers poll, an index lookup, so that the
    bench's own probing takes next to no database CPU from the daemon it measures."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text("select coalesce(max(id), 0) from ticket")).scalar_one())


def counts(engine: Any) -> Counts:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select (select coalesce(max(id), 0) from ticket), "
                "(select count(*) from inbound where status = 'new'), "
                "(select count(*) from outbox where status = 'queued'), "
                "(select coalesce(max(id), 0) from inbound)"
            )
        ).one()
    return Counts(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def commit_counts(engine: Any, after_inbound: int) -> tuple[int, int, int]:
    """(rows, distinct received_at = spool commits, distinct processed_at = pipeline
    commits: the processor stamps a batch with one time, so these are batches)."""
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


def vm_rss_kb(pid: int) -> int:
    return vm_hwm_kb(pid, "VmRSS:")


@dataclass
class Run:
    """One measured load against one tree."""

    label: str
    load: LoadResult
    e2e_seconds: float  # first MAIL -> last ticket
    delivered_seconds: float  # first MAIL -> outbox empty
    backlog: int  # new inbound rows when the last 250 came
    cpu_intake: float  # daemon + children CPU seconds during intake
    cpu_all: float  # ... until the outbox is empty
    rss_main_kb: int
    rss_kid_kb: int
    rss_at: list[int]  # daemon VmRSS (kB) at each tenth of the tickets
    cpu_at: list[float]  # daemon + children CPU seconds since the load began, at each tenth
    tenth_seconds: list[float]  # time for each tenth of the tickets
    commits: tuple[int, int, int]

    def ticket_rate(self, tenth: int) -> float:
        mails = self.load.mails / 10
        return mails / self.tenth_seconds[tenth] if self.tenth_seconds[tenth] else 0.0

    def cpu_tenth(self, tenth: int) -> float:
        """CPU ms per ticket within one tenth of the tickets."""
        edges = [0.0, *self.cpu_at]
        return (edges[tenth + 1] - edges[tenth]) * 1000 / (self.load.mails / 10)

    def intake_tenth(self, first: bool) -> float:
        done = self.load.done_at
        n = max(1, len(done) // 10)
        if first:
            return n / (done[n - 1] - self.load.started_at)
        return n / (done[-1] - done[-n - 1]) if len(done) > n else 0.0

    def figures(self) -> dict[str, float]:
        mails = self.load.mails
        return {
            "intake mails/s": self.load.rate,
            "end to end (tickets) mails/s": mails / self.e2e_seconds,
            "delivered (outbox empty) mails/s": mails / self.delivered_seconds,
            "p50 DATA->250 ms": self.load.pct(50),
            "p99 DATA->250 ms": self.load.pct(99),
            "CPU ms per new ticket": self.cpu_all * 1000 / mails,
            "tickets/s, first 10%": self.ticket_rate(0),
            "tickets/s, last 10%": self.ticket_rate(9),
            "CPU ms per ticket, first 10%": self.cpu_tenth(0),
            "CPU ms per ticket, last 10%": self.cpu_tenth(9),
            "intake/s, first 10%": self.intake_tenth(True),
            "intake/s, last 10%": self.intake_tenth(False),
            "peak RSS daemon MiB": self.rss_main_kb / 1024,
            "peak RSS largest child MiB": self.rss_kid_kb / 1024,
            "RSS at 10% of tickets MiB": self.rss_at[0] / 1024,
            "RSS at 100% of tickets MiB": self.rss_at[-1] / 1024,
        }


def tree_cpu(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(k) for k in descendants(pid))


def run_maildesk(
    label: str,
    tree: Path,
    args: argparse.Namespace,
    warm: list[tuple[str, bytes]],
    mails: list[tuple[str, bytes]],
    work: Path,
) -> Run:
    sys.path.insert(0, str(REPO))
    from sqlalchemy import create_engine

    work.mkdir(parents=True)
    daemon = Daemon(work / "data", args.database_url, tree)
    try:
        daemon.start()
        assert daemon.proc is not None
        url = daemon.database_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        # Pooled: a poll every 20-50 ms must not cost a new PostgreSQL backend each.
        engine = create_engine(url, pool_size=2)
        before = counts(engine)
        if args.warmup:
            run_load("warm-up", daemon.port, warm, args.clients)
            deadline = time.monotonic() + 120
            while counts(engine).tickets < before.tickets + args.warmup:
                if time.monotonic() > deadline:
                    raise SystemExit("warm-up mails never became tickets")
                time.sleep(0.05)
        start = counts(engine)
        want = start.tickets + args.mails
        pid = daemon.proc.pid
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--nonblocking",
                    "--threads",
                    "--subprocesses",
                    "--format",
                    "raw" if args.py_spy.endswith(".txt") else "speedscope",
                    "--rate",
                    "50",
                    "--output",
                    f"{args.py_spy}.{label}",
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let py-spy attach

        # Watch the tickets grow while the load runs: the time of each tenth, and RSS.
        marks: list[float] = []
        rss_at: list[int] = []
        cpu_at: list[float] = []
        watching = threading.Event()

        def watch() -> None:
            step = args.mails / 10
            while len(marks) < 10 and not watching.is_set():
                made = tickets_made(engine) - start.tickets
                while len(marks) < 10 and made >= step * (len(marks) + 1) - 0.5:
                    marks.append(time.monotonic())
                    rss_at.append(vm_rss_kb(pid))
                    cpu_at.append(tree_cpu(pid) - cpu0)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        cpu0 = tree_cpu(pid)
        watcher.start()
        load = run_load(label, daemon.port, mails, args.clients, args.rate)
        cpu_intake = tree_cpu(pid) - cpu0
        backlog = counts(engine).inbound_new
        deadline = time.monotonic() + 1800
        e2e_done = delivered = 0.0
        while True:
            if e2e_done or tickets_made(engine) >= want:  # else the counts cannot be done
                now_counts = counts(engine)
                if not e2e_done and now_counts.tickets >= want and now_counts.inbound_new == 0:
                    e2e_done = time.monotonic()
                if e2e_done and now_counts.outbox_queued == 0:
                    delivered = time.monotonic()
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {tickets_made(engine) - start.tickets} tickets")
            time.sleep(0.02)
        cpu_all = tree_cpu(pid) - cpu0
        watcher.join(timeout=10)
        watching.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        commits = commit_counts(engine, start.max_inbound)
        kids = descendants(pid)
        rss_main = vm_hwm_kb(pid)
        rss_kid = max((vm_hwm_kb(k) for k in kids), default=0)
        engine.dispose()
    finally:
        daemon.stop()
    while len(marks) < 10:  # the watcher missed the end (should not happen)
        marks.append(e2e_done)
        rss_at.append(rss_at[-1] if rss_at else 0)
        cpu_at.append(cpu_all)
    edges = [load.started_at, *marks]
    tenths = [b - a for a, b in itertools.pairwise(edges)]
    return Run(
        label,
        load,
        e2e_done - load.started_at,
        delivered - load.started_at,
        backlog,
        cpu_intake,
        cpu_all,
        rss_main,
        rss_kid,
        rss_at,
        cpu_at,
        tenths,
        commits,
    )


def run_noop(
    args: argparse.Namespace, warm: list[tuple[str, bytes]], mails: list[tuple[str, bytes]]
) -> LoadResult:
    noop_port = free_port()
    noop = subprocess.Popen([sys.executable, __file__, "--noop-server", str(noop_port)])
    try:
        wait_port(noop_port, noop)
        if args.warmup:
            run_load("warm-up", noop_port, warm, args.clients)
        return run_load("no-op aiosmtpd", noop_port, mails, args.clients)
    finally:
        if noop.poll() is None:
            noop.send_signal(signal.SIGTERM)
            noop.wait(timeout=10)


def fresh_database(args: argparse.Namespace, label: str) -> str | None:
    """--database-url names a PostgreSQL server database; each run gets a new one."""
    if not args.database_url:
        return None
    from sqlalchemy import create_engine, text

    url: str = args.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    name = f"maildesk_bench_{label}_{os.getpid()}_{random.getrandbits(24):x}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(args: argparse.Namespace, url: str | None) -> None:
    if not url or not args.database_url:
        return
    from sqlalchemy import create_engine, text

    admin_url = args.database_url
    if admin_url.startswith("postgresql://"):
        admin_url = "postgresql+psycopg://" + admin_url.removeprefix("postgresql://")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def baseline_tree(rev: str, where: Path) -> Path:
    """A detached `git worktree` of REV (removed again by remove_tree)."""
    tree = where / f"baseline-{rev}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev],
        check=True,
    )
    return tree


def remove_tree(tree: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
    )


def statements(tree: Path, database_url: str | None) -> dict[str, float] | None:
    """bench/sqlprobe.py against a tree, in its own process (its own imports)."""
    cmd = [sys.executable, str(REPO / "bench" / "sqlprobe.py"), "--tree", str(tree)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    db = None
    try:
        if database_url:
            db = fresh_database(argparse.Namespace(database_url=database_url), "probe")
            cmd += ["--database-url", str(db)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        drop_database(argparse.Namespace(database_url=database_url), db)
    if out.returncode != 0:
        print(f"sqlprobe failed for {tree}: {out.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def print_run(run: Run, noop: LoadResult | None, args: argparse.Namespace) -> None:
    md = run.load
    print(f"\n== {run.label}")
    print(f"{'server':<26}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}")
    for r in (md, noop) if noop else (md,):
        print(
            f"{r.name:<26}{r.rate:>10.1f}{r.pct(50):>10.2f}{r.pct(99):>10.2f}"
            f"{max(r.latencies, default=0) * 1000:>10.2f}{len(r.failures):>8}"
        )
    print(
        f"{'end-to-end (tickets)':<26}{md.mails / run.e2e_seconds:>10.1f}"
        f"   (first MAIL -> last ticket: {run.e2e_seconds:.2f} s)"
    )
    print(
        f"{'delivered (outbox empty)':<26}{md.mails / run.delivered_seconds:>10.1f}"
        f"   (first MAIL -> last outbox mail delivered: {run.delivered_seconds:.2f} s)"
    )
    if noop and noop.rate:
        print(f"intake/no-op: {md.rate / noop.rate:.0%} (aim: at least 40%)")
    rows, spool, pipe = run.commits
    print(
        f"pipeline backlog when the last 250 came: {run.backlog}; spool commits "
        f"{spool} ({rows / max(spool, 1):.1f} mails each), pipeline batches {pipe}"
    )
    print(
        f"CPU (daemon + parse workers): {run.cpu_intake:.1f} s during intake, "
        f"{run.cpu_all:.1f} s until delivered = {run.cpu_all * 1000 / md.mails:.1f} ms per "
        f"new ticket"
    )
    print(
        f"tickets/s first 10% {run.ticket_rate(0):.1f}, last 10% {run.ticket_rate(9):.1f}; "
        f"CPU ms per ticket first 10% {run.cpu_tenth(0):.2f}, last 10% {run.cpu_tenth(9):.2f}; "
        f"intake/s first 10% {run.intake_tenth(True):.1f}, last 10% "
        f"{run.intake_tenth(False):.1f}"
    )
    print(
        f"peak RSS (VmHWM): daemon {run.rss_main_kb / 1024:.0f} MiB, largest child "
        f"{run.rss_kid_kb / 1024:.0f} MiB; daemon RSS at each tenth of the tickets (MiB): "
        + " ".join(f"{kb / 1024:.0f}" for kb in run.rss_at)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="mails/s to send at (default: as fast as the server takes them); a steady "
        "rate under the pipeline's speed shows whether the cost per mail grows",
    )
    parser.add_argument("--size", type=int, default=4096, help="bytes per mail (about)")
    parser.add_argument("--warmup", type=int, default=40, help="unmeasured mails first")
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: SQLite in the temp dir; a PostgreSQL URL: a new database per run",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--baseline", metavar="GIT-REV", help="compare with this revision")
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs with --baseline")
    parser.add_argument("--no-probe", action="store_true", help="skip the statement counts")
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

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-"))
    trees: list[tuple[str, Path]] = [("this", REPO)]
    failures: list[str] = []
    try:
        if args.baseline:
            trees.insert(0, (f"baseline {args.baseline}", baseline_tree(args.baseline, tmp)))
        warm = make_mails(args.warmup, args.size, "warm", rng)
        mails = make_mails(args.mails, args.size, "run", rng)
        avg = sum(len(raw) for _, raw in mails) / len(mails)
        print(
            f"{args.mails} mails of {avg:.0f} bytes on average, {args.clients} clients, "
            f"{os.cpu_count()} CPUs; database "
            f"{(args.database_url or 'sqlite').split(':')[0]}; temp dir {tmp}; "
            f"{args.rounds if args.baseline else 1} round(s)"
            + (f", alternating {' / '.join(t for t, _ in trees)}" if args.baseline else ""),
            flush=True,
        )
        runs: dict[str, list[Run]] = {label: [] for label, _ in trees}
        noops: list[LoadResult] = []
        for round_no in range(args.rounds if args.baseline else 1):
            for n, (label, tree) in enumerate(trees):
                db = fresh_database(args, f"r{round_no}t{n}")
                ns = argparse.Namespace(**{**vars(args), "database_url": db})
                try:
                    run = run_maildesk(
                        label, tree, ns, warm, mails, tmp / f"round{round_no}-{n}"
                    )
                finally:
                    drop_database(args, db)
                runs[label].append(run)
                failures += run.load.failures
                noop = run_noop(args, warm, mails) if n == len(trees) - 1 else None
                if noop:
                    noops.append(noop)
                    failures += noop.failures
                print_run(run, noop, args)
                sys.stdout.flush()
        probes = {}
        if not args.no_probe:
            for label, tree in trees:
                probes[label] = statements(tree, args.database_url)
    finally:
        for _, tree in trees:
            if tree != REPO:
                remove_tree(tree)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\n== summary (median of each side's runs)")
    labels = [label for label, _ in trees]
    figures = {label: [r.figures() for r in runs[label]] for label in labels}
    names = list(figures[labels[-1]][0])
    header = f"{'':<36}" + "".join(f"{label:>22}" for label in labels)
    if args.baseline:
        header += f"{'this/baseline':>16}"
    print(header)
    for name in names:
        values = [median([f[name] for f in figures[label]]) for label in labels]
        line = f"{name:<36}" + "".join(f"{v:>22.1f}" for v in values)
        if args.baseline and values[0]:
            line += f"{values[-1] / values[0]:>15.2f}x"
        print(line)
    noop_rate = median([n.rate for n in noops]) if noops else 0.0
    print(f"{'no-op aiosmtpd intake mails/s':<36}{noop_rate:>22.1f}")
    for kind in ("new", "reply", "duplicate"):
        counted = [probes.get(label) for label in labels] if probes else []
        if counted and all(counted):
            line = f"{'SQL statements per ' + kind:<36}" + "".join(
                f"{c[kind]:>22.2f}" for c in counted if c
            )
            first, last = counted[0], counted[-1]
            if args.baseline and first and last and first[kind]:
                line += f"{last[kind] / first[kind]:>15.2f}x"
            print(line)
    if failures:
        print(f"{len(failures)} mails refused, e.g. {failures[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
