"""SQL statements per new ticket, per reply and per duplicate, counted in the pipeline.

    .venv/bin/python bench/sqlprobe.py [--tree DIR] [--database-url URL] [--prefill N] [-v]

Runs the processor's commit step (`Processor._commit`, what the pipeline thread does
for a batch of parsed mails) in this process on three batches of COMMIT_EVERY mails
each, and counts every statement the database driver is handed, with a SQLAlchemy
`before_cursor_execute` listener: BEGIN, SAVEPOINT and COMMIT included (amortised
over the batch), an executemany counted once (one call, one round trip). The
connection's PRAGMAs are not statements of a mail and are not counted.

1. new: mails from new senders, each becomes a ticket (confirmation, notifications);
2. reply: each requester answers its confirmation (In-Reply-To + [TID] in the subject);
3. duplicate: the mails of 1 delivered again.

`--tree DIR` imports maildesk from another checkout (a worktree of an older
revision: bench/ingest.py --baseline uses it), so the same probe measures both.
Prints one JSON line last: {"new": x, "reply": y, "duplicate": z, ...}.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class StatementCounter:
    """Counts statements per thread name prefix (or all), and what they were."""

    def __init__(self, thread_prefix: str | None = None) -> None:
        self.thread_prefix = thread_prefix
        self.total = 0
        self.kinds: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.active = False

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.active:
            return
        if self.thread_prefix and not threading.current_thread().name.startswith(
            self.thread_prefix
        ):
            return
        words = statement.split()
        head = re.sub(r"_\d+$", "", " ".join(words[:4])) if words else ""
        with self._lock:
            self.total += 1
            self.kinds[head] += 1

    @contextmanager
    def counting(self) -> Iterator[StatementCounter]:
        self.total = 0
        self.kinds.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = False


def install(counter: StatementCounter) -> None:
    from sqlalchemy import Engine, event

    event.listen(Engine, "before_cursor_execute", counter)


def uninstall(counter: StatementCounter) -> None:
    from sqlalchemy import Engine, event

    event.remove(Engine, "before_cursor_execute", counter)


def _mail(i: int, tag: str, subject: str | None = None, reply_to_id: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Probe Customer {i} <probe{i}.{tag}@customers.example>"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject or f"Probe {tag} {i}: the printer does not print"
    msg["Message-ID"] = f"<probe-{tag}-{i}-{'r' if reply_to_id else 'n'}@customers.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    if reply_to_id:
        msg["In-Reply-To"] = f"<{reply_to_id}>"
        msg["References"] = f"<{reply_to_id}>"
    msg.set_content(
        "Hello,\nthe printer in room 4 prints blank pages since this morning.\n"
        "Could you have a look?\n\nRegards\n"
    )
    return msg.as_bytes()


# Where each module lived before the package layout (a --tree of an older revision).
_FLAT = {
    "maildesk.config.runtime": "maildesk.runtime",
    "maildesk.config.settings": "maildesk.settings",
    "maildesk.storage.db": "maildesk.db",
    "maildesk.storage.models": "maildesk.models",
    "maildesk.work.processor": "maildesk.processor",
    "maildesk.core.parse": "maildesk.parse",
    "maildesk.core.tid": "maildesk.tid",
}


def module(name: str) -> Any:
    """`name` from the tree being measured, in whichever layout that tree has."""
    import importlib

    flat = (Path(sys.path[0]) / "maildesk" / "processor.py").exists()
    return importlib.import_module(_FLAT[name] if flat else name)


class Probe:
    """A pipeline commit step on a real database, mails fed in batches."""

    def __init__(
        self, database_url: str, data_dir: Path, root: Path = REPO, batch: int | None = None
    ) -> None:
        load_runtime = module("maildesk.config.runtime").load_runtime
        load_settings = module("maildesk.config.settings").load_settings
        db = module("maildesk.storage.db")
        make_engine, upgrade = db.make_engine, db.upgrade
        processor = module("maildesk.work.processor")
        COMMIT_EVERY, Processor = processor.COMMIT_EVERY, processor.Processor

        settings = load_settings(
            data_dir=data_dir,
            database_url=database_url,
            rules=root / "rules.yaml",
            sla=root / "sla.yaml",
            templates=root / "templates",
            secret="probe",
            auto_reply_limit_per_hour=1_000_000,
            new_tickets_per_sender_per_hour=1_000_000,
        )
        self.runtime = load_runtime(settings)
        self.engine = make_engine(database_url)
        upgrade(self.engine)
        self.batch = batch or COMMIT_EVERY
        self.processor = Processor(self.engine, lambda: self.runtime, None)  # type: ignore[arg-type]

    def close(self) -> None:
        self.processor.close()
        self.engine.dispose()

    def spool(self, raws: list[bytes]) -> list[int]:
        from sqlalchemy import insert
        from sqlmodel import col

        Inbound = module("maildesk.storage.models").Inbound

        now = datetime.now(UTC)
        rows = [
            {
                "received_at": now,
                "source": "smtp:probe",
                "envelope_from": None,
                "envelope_to": "support@localhost",
                "raw": raw,
                "size": len(raw),
                "status": "new",
                "attempts": 0,
            }
            for raw in raws
        ]
        with self.engine.begin() as conn:
            result = conn.execute(insert(Inbound).returning(col(Inbound.id)), rows)
            return [int(r[0]) for r in result]

    def prepare(self, raws: list[bytes]) -> list[tuple[int, Any]]:
        """Spool and parse (not counted: the spool and the parse workers do that)."""
        parse_mail = module("maildesk.core.parse").parse_mail

        ids = self.spool(raws)
        return [(i, parse_mail(raw)) for i, raw in zip(ids, raws, strict=True)]

    def commit(self, items: list[tuple[int, Any]]) -> list[tuple[str, int | None]]:
        """What the pipeline thread does with a batch of parsed mails."""
        results: list[tuple[str, int | None]] = self.processor._commit(items)
        return results

    def confirmation_ids(self, tickets: list[int]) -> dict[int, str]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text("select ticket_id, message_id from outbox where kind = 'confirmation'")
            ).all()
        wanted = set(tickets)
        return {int(t): str(m) for t, m in rows if t in wanted}


def measure(
    database_url: str, data_dir: Path, prefill: int = 0, tag: str = "p", root: Path = REPO
) -> dict[str, Any]:
    """Statements per mail for each kind, on this database."""
    format_tid = module("maildesk.core.tid").format_tid

    counter = StatementCounter()
    install(counter)
    probe = Probe(database_url, data_dir, root)
    try:
        n = probe.batch
        for start in range(0, prefill, 200):
            fill = [_mail(i, f"{tag}fill") for i in range(start, min(prefill, start + 200))]
            probe.commit(probe.prepare(fill))
        news = [_mail(i, tag) for i in range(n)]
        items = probe.prepare(news)
        with counter.counting():
            results = probe.commit(items)
        new_total, new_kinds = counter.total, dict(counter.kinds)
        assert [r[0] for r in results] == ["done"] * n, results
        tickets = [int(t) for _, t in results if t is not None]
        confirmations = probe.confirmation_ids(tickets)
        replies = [
            _mail(
                i,
                tag,
                subject=f"Re: [{format_tid(t)}] Probe {tag} {i}: the printer does not print",
                reply_to_id=confirmations.get(t),
            )
            for i, t in enumerate(tickets)
        ]
        items = probe.prepare(replies)
        with counter.counting():
            results = probe.commit(items)
        reply_total, reply_kinds = counter.total, dict(counter.kinds)
        assert [t for _, t in results] == tickets, (results, tickets)
        items = probe.prepare(news)
        with counter.counting():
            results = probe.commit(items)
        dup_total, dup_kinds = counter.total, dict(counter.kinds)
        assert [r[0] for r in results] == ["duplicate"] * n, results
    finally:
        probe.close()
        uninstall(counter)
    return {
        "new": new_total / n,
        "reply": reply_total / n,
        "duplicate": dup_total / n,
        "batch": n,
        "kinds": {"new": new_kinds, "reply": reply_kinds, "duplicate": dup_kinds},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="import maildesk from here")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--prefill", type=int, default=0, help="tickets created first")
    parser.add_argument("--tag", default="p", help="distinguishes senders between runs")
    parser.add_argument("-v", "--verbose", action="store_true", help="statements by kind")
    parser.add_argument("--keep", type=Path, help="keep the database in this directory")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    with tempfile.TemporaryDirectory(prefix="maildesk-sqlprobe-") as tmp:
        where = args.keep or Path(tmp)
        url = args.database_url or f"sqlite:///{where / 'maildesk.db'}"
        result = measure(url, where / "data", args.prefill, args.tag, args.tree.resolve())
    if args.verbose:
        for kind in ("new", "reply", "duplicate"):
            print(f"{kind}: {result[kind]:.2f} statements per mail")
            for head, count in sorted(result["kinds"][kind].items(), key=lambda kv: -kv[1]):
                print(f"    {count / result['batch']:6.2f}  {head}")
    result.pop("kinds")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
