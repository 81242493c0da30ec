"""Threading on real support threads (../shared/corpora/threads, read in place):
`maildesk ingest` of the whole mbox, then which ticket each mail landed on."""

from __future__ import annotations

import csv
import json
import mailbox
from collections import defaultdict
from pathlib import Path

from sqlalchemy import create_engine, text

from maildesk.core.parse import parse_mail
from tests.conftest import base_env, maildesk_cli


def test_real_threads_stay_pure_and_follow_ups_find_the_starter(
    corpora: Path, tmp_path: Path
) -> None:
    folder = corpora / "threads"
    rows = list(csv.DictReader((folder / "threads.csv").open(encoding="utf-8")))
    box = mailbox.mbox(str(folder / "blinux-list-threads.mbox"), create=False)
    raws = [box.get_bytes(k) for k in box.iterkeys()]
    box.close()
    # The author as a person would read it: From, or the list's Reply-To/X-Original-From.
    authors = {r["message_id"].strip("<>"): parse_mail(raw).from_addr for r, raw in
               zip(rows, raws, strict=True)}
    thread_of = {r["message_id"].strip("<>"): r["thread_id"] for r in rows}

    url = f"sqlite:///{tmp_path / 'data' / 'maildesk.db'}"
    env = base_env(tmp_path / "data", url)
    maildesk_cli(env, "db", "upgrade")
    maildesk_cli(env, "ingest", str(folder / "blinux-list-threads.mbox"))
    engine = create_engine(url)
    with engine.connect() as conn:
        ticket_of = {
            str(m): int(t)
            for m, t in conn.execute(
                text("select message_id, ticket_id from message where direction = 'in'")
            )
        }
        list_people = conn.execute(
            text("select count(*) from participant where address = 'blinux-list@redhat.com'")
        ).scalar()
    engine.dispose()
    assert len(ticket_of) == len(rows)
    assert list_people == 0  # a distribution list is never a participant

    threads_per_ticket: dict[int, set[str]] = defaultdict(set)
    for mid, ticket in ticket_of.items():
        threads_per_ticket[ticket].add(thread_of[mid])
    mixed = {t: s for t, s in threads_per_ticket.items() if len(s) > 1}
    assert not mixed, f"tickets mixing threads: {mixed}"

    by_thread: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_thread[r["thread_id"]].append(r["message_id"].strip("<>"))
    follow_ups = landed = 0
    missed = []
    for mids in by_thread.values():
        root = mids[0]
        if not authors[root]:
            continue  # the anonymous list era: no header names the author
        for mid in mids[1:]:
            if authors[mid] == authors[root]:
                follow_ups += 1
                if ticket_of[mid] == ticket_of[root]:
                    landed += 1
                else:
                    missed.append(mid)
    assert follow_ups >= 100
    assert landed / follow_ups >= 0.98, f"{landed}/{follow_ups} on the starter's ticket: {missed}"

    # `thread explain` says why a follow-up of the starter joins the starter's ticket
    mid = next(m for ms in by_thread.values() for m in ms[1:]
               if authors[ms[0]] and authors[m] == authors[ms[0]])
    saved = tmp_path / "follow-up.eml"
    saved.write_bytes(raws[[r["message_id"].strip("<>") for r in rows].index(mid)])
    explained = json.loads(maildesk_cli(env, "thread", "explain", str(saved), "--json").stdout)
    assert explained["ticket"] == f"MD-{ticket_of[mid]}"
    assert "requester" in explained["reason"], explained
