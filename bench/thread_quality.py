"""Threading quality on real support threads: `maildesk ingest` of a threads corpus.

    .venv/bin/python bench/thread_quality.py [--corpus ../shared/corpora/threads] [--keep]
                                        [--baseline GIT-REV]

The corpus is an mbox plus threads.csv naming each mail's thread (../shared/corpora/
threads/README.md). The mbox goes through `maildesk ingest` into a fresh data dir
(SQLite), then the bench reads which ticket each Message-ID landed on and prints:

* purity: tickets holding mail of one thread only (must be 100%);
* starter completeness: follow-ups whose author is the thread starter (the From
  address, or Reply-To / X-Original-From when the list rewrote From) that landed on
  the ticket of the thread's first mail (aim: at least 98%);
* overall completeness: all mails of a thread on one ticket, for information;
* mails/s of the ingest (wall time of the whole CLI call).

With --baseline REV the same is measured for a git worktree of REV (its own venv is
not built: it runs with this venv's packages and its own source tree).
"""

from __future__ import annotations

import argparse
import csv
import email
import email.policy
import email.utils
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def author_of(raw: bytes) -> str | None:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    sender = email.utils.parseaddr(str(msg.get("From", "")))[1].lower()
    list_post = str(msg.get("List-Post", "")).strip("<> ").removeprefix("mailto:").lower()
    if sender and sender != list_post and sender != "blinux-list@redhat.com":
        return sender
    for header in ("X-Original-From", "Reply-To"):
        found = email.utils.parseaddr(str(msg.get(header, "")))[1].lower()
        if found and found not in (list_post, "blinux-list@redhat.com"):
            return found
    return None  # the anonymous list: no header names the author


def messages(mbox: Path) -> list[bytes]:
    import mailbox

    box = mailbox.mbox(str(mbox), create=False)
    try:
        return [box.get_bytes(k) for k in box.iterkeys()]
    finally:
        box.close()


def run(source: Path, corpus: Path, keep: bool) -> dict[str, float]:
    rows = list(csv.DictReader((corpus / "threads.csv").open(encoding="utf-8")))
    raws = messages(corpus / "blinux-list-threads.mbox")
    thread_of = {r["message_id"].strip("<>"): r["thread_id"] for r in rows}
    authors = {}
    for r, raw in zip(rows, raws, strict=True):
        authors[r["message_id"].strip("<>")] = author_of(raw)
    work = Path(tempfile.mkdtemp(prefix="md-thread-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDESK_")}
    env.update(
        MAILDESK_DATA_DIR=str(work / "data"),
        MAILDESK_RULES=str(REPO / "rules.yaml"),
        MAILDESK_SLA=str(REPO / "sla.yaml"),
        MAILDESK_TEMPLATES=str(REPO / "templates"),
        MAILDESK_SECRET="bench",
        PYTHONPATH=str(source),
    )
    cli = [sys.executable, "-m", "maildesk"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=source)
    started = time.perf_counter()
    subprocess.run(
        [*cli, "ingest", str(corpus / "blinux-list-threads.mbox")],
        env=env, check=True, capture_output=True, cwd=source,
    )
    elapsed = time.perf_counter() - started
    db = sqlite3.connect(work / "data" / "maildesk.db")
    ticket_of = {
        str(mid): int(tid)
        for mid, tid in db.execute(
            "select message_id, ticket_id from message where direction = 'in'"
        )
    }
    db.close()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")

    threads_in_ticket: dict[int, set[str]] = defaultdict(set)
    for mid, ticket in ticket_of.items():
        if mid in thread_of:
            threads_in_ticket[ticket].add(thread_of[mid])
    pure = sum(1 for t in threads_in_ticket.values() if len(t) == 1)

    by_thread: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_thread[r["thread_id"]].append(r["message_id"].strip("<>"))
    starter_total = starter_ok = whole = 0
    for mids in by_thread.values():
        root = mids[0]
        root_author, root_ticket = authors[root], ticket_of.get(root)
        if len({ticket_of.get(m) for m in mids}) == 1:
            whole += 1
        if root_author is None:
            continue
        for mid in mids[1:]:
            if authors[mid] == root_author:
                starter_total += 1
                starter_ok += ticket_of.get(mid) == root_ticket
    missing = sum(1 for m in thread_of if m not in ticket_of)
    return {
        "mails": len(rows),
        "not stored": missing,
        "tickets": len(threads_in_ticket),
        "purity %": 100.0 * pure / max(1, len(threads_in_ticket)),
        "starter follow-ups": starter_total,
        "starter completeness %": 100.0 * starter_ok / max(1, starter_total),
        "threads on one ticket %": 100.0 * whole / max(1, len(by_thread)),
        "mails/s": len(rows) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpora/threads")
    parser.add_argument("--baseline", help="git revision to measure in a worktree as well")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    results = {"this tree": run(REPO, args.corpus, args.keep)}
    if args.baseline:
        tree = Path(tempfile.mkdtemp(prefix="md-base-")) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                        args.baseline], check=True, capture_output=True)
        try:
            results[args.baseline] = run(tree, args.corpus, args.keep)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    names = list(results)
    print(f"{'':28}" + "".join(f"{n:>16}" for n in names))
    for key in results[names[0]]:
        print(f"{key:28}" + "".join(f"{results[n][key]:>16.1f}" for n in names))


if __name__ == "__main__":
    main()
