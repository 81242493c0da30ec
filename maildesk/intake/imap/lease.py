"""One poller per mailbox across every `maildesk run` sharing a database.

PostgreSQL: a session-level `pg_try_advisory_lock` on a dedicated connection,
held for as long as the poller runs. When the process dies, its connection
closes and PostgreSQL releases the lock at once; a standby retries every few
seconds and takes over. The lease connection asks the server for TCP
keepalives, so even a machine that vanishes without closing its socket loses
the lock in about half a minute.

SQLite: one database file is served by one process, so the lease is a no-op
that is always held.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from sqlalchemy import Connection, Engine, text

from maildesk.storage.db import is_postgres

log = logging.getLogger(__name__)

LEASE_RETRY_SECONDS = 10.0
# The server drops a silent peer after idle + interval * count seconds.
_KEEPALIVE = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


class Lease(Protocol):
    def still_held(self) -> bool: ...

    def release(self) -> None: ...


def lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock number for a mailbox key."""
    digest = hashlib.blake2b(f"maildesk-imap:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class NoLease:
    """SQLite: a single process owns the database, nothing to coordinate."""

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        return None


class AdvisoryLease:
    def __init__(self, conn: Connection, lock: int) -> None:
        self._conn = conn
        self._lock = lock

    def still_held(self) -> bool:
        # A session lock lives as long as its session: a live connection still holds it.
        try:
            self._conn.execute(text("SELECT 1")).scalar_one()
        except Exception as exc:
            log.warning("imap lease: lost the database connection holding the lease: %s", exc)
            return False
        return True

    def release(self) -> None:
        # Closing the session for good is the one sure way to drop a session lock.
        try:
            self._conn.invalidate()
        finally:
            self._conn.close()


def try_acquire(engine: Engine, key: str) -> Lease | None:
    """The lease for mailbox `key`, or None while another instance holds it. Blocking."""
    if not is_postgres(engine):
        return NoLease()
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        for name, value in _KEEPALIVE.items():
            conn.execute(text(f"SET {name} = {int(value)}"))
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_id(key)})
        if got.scalar_one():
            return AdvisoryLease(conn, lock_id(key))
    except Exception:
        conn.invalidate()
        conn.close()
        raise
    conn.close()
    return None


def holder_exists(engine: Engine, key: str) -> bool | None:
    """Whether some instance holds the lease now (None on SQLite). Read-only."""
    if not is_postgres(engine):
        return None
    k = lock_id(key) & 0xFFFFFFFFFFFFFFFF
    with engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 1 AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid)"
            ),
            {"hi": k >> 32, "lo": k & 0xFFFFFFFF},
        ).scalar_one()
    return bool(count)
