"""The SLA scan over a large ticket table: is it a query over due rows, not a loop?

    .venv/bin/python bench/sla_scan.py [--tickets 1000000] [--due 100] [--backend both]

Fills a fresh database (SQLite file in a temp dir, and/or a new database on the
PostgreSQL at MAILDESK_TEST_PG, default postgresql+psycopg://postgres@127.0.0.1:5432/test)
with `--tickets` open tickets whose next SLA step is days ahead, and `--due` whose breach
is due now (their warnings went out at an earlier scan): `--due` mails to send. Then
times, on the same database in the same run:

- scan: `maildesk.work.slascan.scan_sla` as the scheduler runs it (finds the due rows through
  the `sla_next_at` index, claims each step, renders and queues each mail, commits);
- query: the due-row query alone;
- baseline: what a scan without the index would have to do, a pass over every open
  ticket's due times (the query a loop over tickets starts with).

Each is run `--rounds` times (the due rows are made due again between rounds) and the
median and max are printed. Aim: scan under 200 ms with 100 due among 1,000,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from maildesk.config.runtime import Runtime, load_runtime  # noqa: E402
from maildesk.config.settings import load_settings  # noqa: E402
from maildesk.storage.db import make_engine, upgrade  # noqa: E402
from maildesk.work.slascan import scan_sla  # noqa: E402

COLUMNS = (
    "subject, status, priority, category, requester, requester_name, assignee, "
    "assigned_group, sla_level, language, created_at, updated_at, first_response_due, "
    "first_response_warn, sla_next_at, time_spent_minutes"
)


def fill(engine: Engine, tickets: int, now: datetime) -> None:
    """Every ticket in one INSERT ... SELECT over a generated series (fast on both)."""
    later = now + timedelta(days=3)
    values = (
        "'Printer ' || x, 'open', 'normal', 'general', 'c' || x || '@example.org', '', "
        "'alice@example.com', 'l1', 'standard', 'en', :created, :created, :due, :warn, "
        ":due, 0"
    )
    params = {"created": now, "due": later, "warn": later - timedelta(hours=2)}
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"INSERT INTO ticket ({COLUMNS}) SELECT {values} "
                              f"FROM generate_series(1, {tickets}) AS x"), params)
        else:
            conn.execute(text(f"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s"
                              f" LIMIT {tickets}) INSERT INTO ticket ({COLUMNS}) "
                              f"SELECT {values} FROM s"), params)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def make_due(engine: Engine, due: int, now: datetime, round_no: int) -> None:
    """The first `due` tickets: their breach is due now (a new due time each round, so
    the steps are new and really sent; their warning went out at an earlier scan)."""
    deadline = now - timedelta(minutes=1 + round_no)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ticket SET first_response_due = :d, first_response_warn = NULL,"
                          " sla_next_at = :d WHERE id <= :n"), {"d": deadline, "n": due})


def timed(fn: Callable[[], object], rounds: int, before: Callable[[int], None]) -> list[float]:
    times = []
    for i in range(rounds):
        before(i)
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench(name: str, url: str, args: argparse.Namespace, runtime: Runtime) -> None:
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    start = time.perf_counter()
    fill(engine, args.tickets, now)
    print(f"{name}: {args.tickets:,} tickets inserted in {time.perf_counter() - start:.1f} s")

    def due_rows() -> object:
        with engine.connect() as conn:
            return conn.execute(text("SELECT id FROM ticket WHERE sla_next_at <= :n "
                                     "ORDER BY sla_next_at LIMIT 500"), {"n": now}).all()

    def every_open() -> object:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT id, first_response_due, first_response_warn, next_response_due,"
                " resolution_due FROM ticket WHERE status IN ('new', 'open', 'held')")).all()

    sent: list[int] = []
    scans = timed(lambda: sent.append(scan_sla(engine, runtime, now)), args.rounds,
                  lambda i: make_due(engine, args.due, now, i))
    queries = timed(due_rows, args.rounds, lambda i: make_due(engine, args.due, now, 100 + i))
    loops = timed(every_open, max(1, args.rounds // 2), lambda i: None)
    with engine.connect() as conn:
        statements = conn.execute(text("SELECT count(*) FROM outbox")).scalar()
    print(f"{name}: scan with {args.due} due: median {statistics.median(scans):.1f} ms, "
          f"max {max(scans):.1f} ms ({sent} steps sent per round; {statements} mails queued)")
    print(f"{name}: due-row query alone: median {statistics.median(queries):.2f} ms")
    ratio = statistics.median(loops) / statistics.median(queries)
    print(f"{name}: baseline, reading every open ticket's due times: median "
          f"{statistics.median(loops):.0f} ms ({ratio:.0f}x the due-row query)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), rules=REPO / "rules.yaml",
                                 sla=REPO / "sla.yaml", templates=REPO / "templates")
        runtime = load_runtime(settings)
        if args.backend in ("sqlite", "both"):
            bench("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args, runtime)
        if args.backend in ("postgresql", "both"):
            admin_url = os.environ.get(
                "MAILDESK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
            name = f"md_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                bench("PostgreSQL", admin_url.rsplit("/", 1)[0] + f"/{name}", args, runtime)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
