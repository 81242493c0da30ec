"""Per-mailbox poller state in the kv table (SQLite)."""

from __future__ import annotations

from pathlib import Path

from maildesk.intake.imap.lease import NoLease, try_acquire
from maildesk.intake.imap.state import Failure, StateStore
from maildesk.storage.db import make_engine, upgrade


def test_state_round_trip_and_reset(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    store = StateStore(engine, "imap:a@h:993/INBOX")
    other = StateStore(engine, "imap:a@h:993/INBOX_2")  # a prefix of it must not leak in
    assert store.load().uidvalidity is None
    store.reset(77)
    store.save(last_uid=12, failures={5: Failure(2, "boom")})
    other.reset(1)
    other.save(last_uid=99, failures={6: Failure(1, "x")})
    state = store.load()
    assert (state.uidvalidity, state.last_uid, state.failures) == (77, 12, {5: Failure(2, "boom")})
    store.save(cleared={5})
    assert store.load().failures == {}
    state = store.reset(78)
    assert (state.uidvalidity, state.last_uid) == (78, 0)
    assert other.load().last_uid == 99
    assert isinstance(try_acquire(engine, "imap:x"), NoLease)  # SQLite: one process, no lease
    engine.dispose()
