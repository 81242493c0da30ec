"""Benchmark: a backlog of mails in a real Dovecot INBOX until all are tickets.

    .venv/bin/python bench/imap_backlog.py [--mails 2000] [--database-url URL]
                                           [--baseline GIT-REV [--rounds 2]]

Prints, from one run on one machine:
  1. the ceiling: a bare imapclient loop that only FETCHes the same mails in
     batches (no parsing, no database);
  2. the poller with a null pipeline (every spooled row is marked done at
     once): the IMAP side's own throughput, fetch + spool + verdict + move;
  3. maildesk end to end: poller + spool + the real pipeline, until every mail
     is a ticket and every message is in Processed.

--baseline REV: step 3 also against a `git worktree` of REV (a temp dir, its code
first on sys.path in a subprocess of this venv), alternating runs (A B A B ...),
each on a fresh database and a fresh Dovecot; prints both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The tree whose maildesk (and rules, templates, test helpers) is measured: this one,
# or a baseline worktree (set by --baseline for its subprocesses).
TREE = Path(os.environ.get("MAILDESK_BENCH_TREE") or REPO)
sys.path.insert(0, str(TREE))

from sqlalchemy import Engine, func, update  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

# A baseline tree from before the package layout has the same modules, flat.
_FLAT = (TREE / "maildesk" / "processor.py").exists()


def _module(packaged: str, flat: str) -> Any:
    return importlib.import_module("maildesk." + (flat if _FLAT else packaged))


load_runtime = _module("config.runtime", "runtime").load_runtime
load_settings = _module("config.settings", "settings").load_settings
_imap = _module("intake.imap", "imap")
Poller, PollerOptions, parse_mailboxes = _imap.Poller, _imap.PollerOptions, _imap.parse_mailboxes
Spool = _module("intake.spool", "spool").Spool
_db, _models = _module("storage.db", "db"), _module("storage.models", "models")
make_engine, upgrade = _db.make_engine, _db.upgrade
Inbound, Ticket = _models.Inbound, _models.Ticket
ParserPool = _module("work.parsepool", "parsepool").ParserPool
Processor = _module("work.processor", "processor").Processor
try:  # the tree's own Dovecot helper: tests/intake/ today, tests/integration/ before
    from tests.intake.dovecot import Dovecot, start_dovecot
except ModuleNotFoundError:
    from tests.integration.dovecot import Dovecot, start_dovecot  # type: ignore[no-redef]
from tests.mailkit import make_mail  # noqa: E402

BATCH = 250


def backlog(n: int, tag: str) -> list[bytes]:
    body = "Hello,\nour invoice export fails since this morning. Details below.\n" * 8
    return [
        make_mail(
            sender=f"customer{i}@example.org",
            subject=f"{tag} request {i}",
            body=body,
            message_id=f"<{tag}-{i}@bench.example>",
        )
        for i in range(n)
    ]


def bare_fetch(server: Dovecot, user: str, n: int) -> float:
    """mails/s for FETCH BODY.PEEK[] of the whole INBOX in batches."""
    with server.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        started = time.perf_counter()
        uids = client.search("ALL")
        got = 0
        for start in range(0, len(uids), BATCH):
            got += len(client.fetch(uids[start : start + BATCH], [b"BODY.PEEK[]"]))
        elapsed = time.perf_counter() - started
    assert got == n, (got, n)
    return n / elapsed


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


@asynccontextmanager
async def pipeline(url: str, data: Path, real: bool) -> AsyncIterator[tuple[Engine, Any]]:
    settings = load_settings(
        data_dir=data,
        database_url=url,
        rules=TREE / "rules.yaml",
        sla=TREE / "sla.yaml",
        templates=TREE / "templates",
        secret="bench",
    )
    runtime = load_runtime(settings)
    engine = make_engine(url)
    upgrade(engine)
    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    processor = Processor(engine, lambda: runtime, parser)
    # The processor's wake: a method now, an asyncio.Event before the Worker base.
    wake = getattr(processor.wake, "set", processor.wake) if real else (lambda: None)
    spool = Spool(engine, on_stored=wake)
    spool.start()
    loop = asyncio.get_running_loop()
    if real:
        warm = make_mail(subject="warm-up")
        await asyncio.gather(*(parser.parse(warm) for _ in range(4)))
        task = loop.create_task(processor.run_forever())
    else:
        task = loop.create_task(_null_pipeline(engine))
    try:
        yield engine, spool
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.stop()
        processor.close()
        parser.close()
        engine.dispose()


async def _null_pipeline(engine: Engine) -> None:
    """Decide every spooled mail at once: 'done', no ticket (measures the IMAP side)."""

    def mark() -> None:
        with engine.begin() as conn:
            conn.execute(update(Inbound).where(Inbound.status == "new").values(status="done"))

    while True:
        await asyncio.to_thread(mark)
        await asyncio.sleep(0.01)


async def poll_backlog(
    server: Dovecot, user: str, n: int, url: str, data: Path, real: bool
) -> tuple[float, int, int]:
    (mailbox,) = parse_mailboxes(server.url(user))
    options = PollerOptions(poll_seconds=5, batch_mails=BATCH)
    async with pipeline(url, data, real) as (engine, spool):
        poller = Poller(mailbox, engine, spool, options)
        started = time.perf_counter()
        run = getattr(poller, "run_forever", None) or poller.run
        task = asyncio.get_running_loop().create_task(run())
        done: Callable[[], bool] = lambda: poller.counts["moved"] >= n  # noqa: E731
        while not done():
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        poller.close()
        tickets = await asyncio.to_thread(count, engine, Ticket)
    moved = await asyncio.to_thread(server.count, "Processed", user)
    return n / elapsed, tickets, moved


def end_to_end(n: int, database_url: str) -> dict[str, float]:
    """Step 3 alone, on a fresh Dovecot: what a --baseline subprocess runs."""
    server = start_dovecot()
    work = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    try:
        server.append(backlog(n, "real"), user="alice")
        url = database_url or f"sqlite:///{work / 'real'}.db"
        cpu = time.process_time()
        rate, tickets, moved = asyncio.run(
            poll_backlog(server, "alice", n, url, work / "data", real=True)
        )
        cpu = time.process_time() - cpu
    finally:
        server.remove()
        shutil.rmtree(work, ignore_errors=True)
    if tickets != n or moved != n:
        sys.exit(f"FAILED: expected {n} tickets and {n} moved mails, got {tickets}, {moved}")
    return {"mails/s": rate, "CPU ms per mail (this process)": cpu * 1000 / n}


def compare(rev: str, n: int, rounds: int, database_url: str) -> None:
    from bench.abtest import alternate, print_medians
    from bench.ingest import drop_database, fresh_database  # the orchestrator runs here

    @contextmanager
    def fresh() -> Iterator[list[str]]:
        server = argparse.Namespace(database_url=database_url)
        db = fresh_database(server, "imap")  # None for SQLite: a new file
        try:
            yield ["--database-url", db] if db else []
        finally:
            drop_database(server, db)

    results = alternate(__file__, rev, rounds, ["--mails", str(n), "--e2e-json"], fresh)
    print_medians(f"IMAP backlog end to end, {n} mails", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--baseline", metavar="GIT-REV", help="compare step 3 with this")
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs with --baseline")
    parser.add_argument("--e2e-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.mails
    if args.e2e_json:
        print(json.dumps(end_to_end(n, args.database_url)))
        return
    if args.baseline:
        compare(args.baseline, n, args.rounds, args.database_url)
        return
    server = start_dovecot()
    work = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    try:
        t = time.perf_counter()
        server.append(backlog(n, "real"), user="alice")
        server.append(backlog(n, "null"), user="bob")
        print(f"APPENDed {n} mails to each of two mailboxes in {time.perf_counter() - t:.1f} s")

        ceiling = bare_fetch(server, "alice", n)
        print(f"bare imapclient FETCH loop (batches of {BATCH}): {ceiling:8.0f} mails/s")

        def url(name: str) -> str:
            return args.database_url or f"sqlite:///{work / name}.db"

        rate, _, moved = asyncio.run(
            poll_backlog(server, "bob", n, url("null"), work / "data-null", real=False)
        )
        print(f"maildesk poller, null pipeline:            {rate:8.0f} mails/s ({moved} moved)")

        rate, tickets, moved = asyncio.run(
            poll_backlog(server, "alice", n, url("real"), work / "data", real=True)
        )
        print(
            f"maildesk end to end (poller + pipeline):   {rate:8.0f} mails/s "
            f"({tickets} tickets, {moved} in Processed)"
        )
        if tickets != n or moved != n:
            sys.exit(f"FAILED: expected {n} tickets and {n} moved mails")
    finally:
        server.remove()


if __name__ == "__main__":
    main()
