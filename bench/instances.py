"""One `maildesk run` against two on the same PostgreSQL: mails/s for each, and the ratio.

    .venv/bin/python bench/instances.py [--mails 2000] [--clients 4] [--size 4096]
                                        [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each setup (1 daemon, then 2) on a fresh database: `maildesk db upgrade`, the
daemons as subprocesses (each its own data directory and SMTP port), a warm-up,
then CLIENTS threads (split evenly over the daemons' ports) send MAILS distinct
mails, one per SMTP transaction. Figures:

* intake = mails / time from the first MAIL to the last 250 (spooled durably);
* tickets = mails / time from the first MAIL until every mail is a ticket;
* end-to-end = mails / time from the first MAIL until every mail is a ticket with its
  confirmation and staff notification sent (the outbound Maildirs hold them).

The machine's cores bound what a second instance on the same host can add: this
measures how the instances share one database, not a second machine. One run on a
2-core host shared with other work (2,000 mails of 4 KiB, 4 clients): one daemon
162.7 mails/s intake, 26.0 end-to-end; two daemons 225.1 and 30.8; ratio 1.38 and 1.18.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import REPO, free_port, make_mails, run_load, wait_port

WARMUP = 20


def daemon_env(data: Path, url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDESK_")}
    env.update(
        MAILDESK_DATA_DIR=str(data),
        MAILDESK_DATABASE_URL=url,
        MAILDESK_SMTP_LISTEN=f"127.0.0.1:{port}",
        MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        MAILDESK_RULES=str(REPO / "rules.yaml"),
        MAILDESK_SLA=str(REPO / "sla.yaml"),
        MAILDESK_TEMPLATES=str(REPO / "templates"),
        MAILDESK_SECRET="bench",
        MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="1000000",
        MAILDESK_LOG_LEVEL="WARNING",
    )
    return env


def one_setup(
    admin_url: str, instances: int, mails: int, clients: int, size: int
) -> tuple[float, float, float]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"maildesk_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    procs: list[subprocess.Popen[bytes]] = []
    engine = create_engine(url)
    try:
        with tempfile.TemporaryDirectory(prefix="maildesk-bench-") as tmp:
            ports = [free_port() for _ in range(instances)]
            envs = [daemon_env(Path(tmp) / f"d{i}", url, ports[i]) for i in range(instances)]
            subprocess.run(
                [sys.executable, "-m", "maildesk", "db", "upgrade"],
                env=envs[0],
                check=True,
                capture_output=True,
            )
            for i, env in enumerate(envs):
                log = open(Path(tmp) / f"d{i}.log", "wb")  # noqa: SIM115 - lives with the daemon
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "maildesk", "run"], env=env, stdout=log, stderr=log
                    )
                )
            for port, proc in zip(ports, procs, strict=True):
                wait_port(port, proc)
            rng = random.Random(instances)
            for port in ports:  # warm-up: parser workers, caches, connections
                run_load("warmup", port, make_mails(WARMUP, size, f"w{port}", rng), 2)
            total = WARMUP * instances
            outbound = [Path(tmp) / f"d{i}" for i in range(instances)]
            wait_for_tickets(engine, total, outbound)

            batch = make_mails(mails, size, f"m{instances}", rng)
            per_port = [batch[i::instances] for i in range(instances)]
            results = []

            def load(i: int) -> None:
                results.append(
                    run_load(f"d{i}", ports[i], per_port[i], max(1, clients // instances))
                )

            threads = [threading.Thread(target=load, args=(i,)) for i in range(instances)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            intake_done = max(r.finished_at for r in results)
            failures = [f for r in results for f in r.failures]
            if failures:
                raise SystemExit(f"{len(failures)} mails refused: {failures[:3]}")
            tickets_done = wait_for_tickets(engine, total + mails, outbound)
            finished = time.monotonic()
            started = min(r.started_at for r in results)
            return (
                mails / (intake_done - started),
                mails / (tickets_done - started),
                mails / (finished - started),
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_for_tickets(engine: object, tickets: int, outbound: Sequence[Path]) -> float:
    """Every mail a ticket, and both its mails (confirmation, notification) delivered.
    Returns when the last ticket was made (time.monotonic())."""
    made_at = 0.0
    while True:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            made = conn.execute(text("select count(*) from ticket")).scalar()
            waiting = conn.execute(
                text("select count(*) from outbox where status <> 'sent'")
            ).scalar()
        delivered = sum(
            len(os.listdir(d / "sent" / "new")) for d in outbound if (d / "sent" / "new").is_dir()
        )
        if made >= tickets and not made_at:
            made_at = time.monotonic()
        if made >= tickets and waiting == 0 and delivered >= 2 * tickets:
            return made_at
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "MAILDESK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args(argv)
    print(f"{args.mails} mails of ~{args.size} B, {args.clients} SMTP clients, PostgreSQL")
    figures = {}
    for instances in (1, 2):
        intake, tickets, end_to_end = one_setup(
            args.pg, instances, args.mails, args.clients, args.size
        )
        figures[instances] = (intake, tickets, end_to_end)
        print(
            f"{instances} daemon{'s' if instances > 1 else ''}: intake {intake:7.1f} mails/s, "
            f"tickets {tickets:7.1f} mails/s, end-to-end (mail sent) {end_to_end:7.1f} mails/s"
        )
    one, two = figures[1], figures[2]
    print(
        f"ratio two/one: intake {two[0] / one[0]:.2f}, tickets {two[1] / one[1]:.2f}, "
        f"end-to-end {two[2] / one[2]:.2f} (cores on this host: {os.cpu_count()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
