"""Rows the mails of one transaction write, inserted together: one executemany per table
(new tickets first, with ids taken ahead by maildesk.storage.store.new_ticket_id; then
messages, outbox, events, participants) and one upsert for small state (KV), instead
of an ORM unit of work and a statement per row and mail.

The buffer lives in the session (`pending(session)`). It is written to the database

* before the commit, and before the ORM inserts or deletes rows of its own (ids keep
  their order; an ORM UPDATE of a ticket needs nothing that waits);
* before any statement of the session that reads a table with rows waiting, unless the
  statement says it takes the waiting rows into account itself (`AWARE`: the reads of
  the flow of a mail that merge `Pending`'s rows, so most mails cost no extra flush);
  new tickets are never merged: a read of the ticket table, `AWARE` or not, writes them;
* when the caller asks (`flush`): a mail in its own SAVEPOINT flushes before it is
  released, and `discard` drops the rows of a mail whose SAVEPOINT rolled back.

A ticket the flow changed (status, clocks, fields: an ORM object in the session) waits
too: the `AWARE` reads see tickets only as ORM objects, which the session already holds
as changed, or by columns no change touches (requester, created_at, id). So before
them the session does not autoflush when changed tickets are all it holds; the next
other read, or the commit, writes the batch's changed tickets (one executemany per set
of changed columns) instead of one UPDATE per mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.sql.util import find_tables
from sqlmodel import Session

from maildesk.storage.models import KV, Event, Message, Outbox, Participant, Ticket

# execution_options(**AWARE): this statement merges the waiting rows itself, and reads
# tickets only as ORM objects or by columns no change touches (see above).
AWARE = {"maildesk_pending_aware": True}
_KEY = "maildesk.pending"
_TABLES: dict[str, Table] = {  # in the order they are inserted: tickets first
    "ticket": Ticket.__table__,  # type: ignore[attr-defined]
    "message": Message.__table__,  # type: ignore[attr-defined]
    "outbox": Outbox.__table__,  # type: ignore[attr-defined]
    "event": Event.__table__,  # type: ignore[attr-defined]
    "participant": Participant.__table__,  # type: ignore[attr-defined]
}
_KV: Table = KV.__table__  # type: ignore[attr-defined]
# Every row of a table carries the same keys (one executemany): these fill the rest.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ticket": {},  # every column given (maildesk.storage.store._open_ticket)
    "message": {
        "inbound_id": None, "visibility": "public", "dedupe_key": None, "message_id": None,
        "from_addr": "", "to_addrs": "", "subject": "", "body_text": "", "body_html": None,
        "defects": "", "spam_probability": None, "spam_band": None, "spam_model": None,
        "identity": None, "identity_reason": None, "body_hash": None,
    },
    "outbox": {"status": "queued", "attempts": 0, "last_error": None, "sent_at": None},
    "event": {},
    "participant": {"name": ""},
}


@dataclass
class Pending:
    """What waits to be inserted, per table, in the order it was written."""

    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in _TABLES}
    )
    kv: dict[str, str] = field(default_factory=dict)
    # Small state read or written earlier in the transaction (None: no such key).
    kv_known: dict[str, str | None] = field(default_factory=dict)
    # Addresses some waiting row is about (a sender, a recipient, an alert key), so a
    # read about an address nobody of the batch wrote to needs no flush.
    addresses: set[str] = field(default_factory=set)
    # What a batch computes once for all its mails (e.g. the clocks of a new ticket).
    memo: dict[tuple[object, ...], Any] = field(default_factory=dict)
    # Addresses the transaction wrote about, in the buffer or not, flushed or not (a
    # fact read about them before the write is stale; maildesk.storage.facts).
    touched: set[str] = field(default_factory=set)
    # Ids for the new tickets of this transaction (maildesk.storage.store.new_ticket_id),
    # and how many new tickets its mails may open (PostgreSQL takes that many at once).
    ticket_ids: list[int] = field(default_factory=list)
    tickets_expected: int = 1
    # Every outbox row added since `log_outbox`, flushed or not (None: not logging, or a
    # rollback made the log unreliable).
    outbox_log: list[dict[str, Any]] | None = None

    def add(self, table: str, row: dict[str, Any], *addresses: str) -> None:
        full = {**_DEFAULTS[table], **row}
        self.rows[table].append(full)
        if table == "outbox" and self.outbox_log is not None:
            self.outbox_log.append(full)
        named = {a for a in addresses if a}
        self.addresses |= named
        self.touched |= named

    def set_kv(self, key: str, value: str, address: str = "") -> None:
        self.kv[key] = value
        self.kv_known.pop(key, None)
        if address:
            self.addresses.add(address)
            self.touched.add(address)

    def log_outbox(self) -> None:
        self.outbox_log = []

    def touch(self, address: str) -> None:
        """Written about outside the buffer (e.g. an ORM row: a bounce's suppression)."""
        if address:
            self.touched.add(address)

    def waiting(self, table: str) -> list[dict[str, Any]]:
        return self.rows[table]

    def busy(self, tables: set[str]) -> bool:
        return any(self.rows.get(name) for name in tables) or ("kv" in tables and bool(self.kv))

    def empty(self) -> bool:
        return not self.kv and not any(self.rows.values())

    def flush(self, session: Session) -> None:
        if self.empty():
            return
        conn = session.connection()
        for name, table in _TABLES.items():
            if self.rows[name]:
                conn.execute(insert(table), self.rows[name])
        if self.kv:
            conn.execute(_kv_upsert(conn.dialect.name), [
                {"key": k, "value": v} for k, v in self.kv.items()
            ])
            self.kv_known.update(self.kv)
        self._clear()

    def discard(self) -> None:
        """Forget what waits, and what is known of small state (a rollback)."""
        self._clear()
        self.kv_known.clear()
        self.outbox_log = None

    def _clear(self) -> None:
        for rows in self.rows.values():
            rows.clear()
        self.kv.clear()
        self.addresses.clear()


def _kv_upsert(dialect: str) -> Any:
    stmt: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(_KV)
    return stmt.on_conflict_do_update(index_elements=["key"],
                                      set_={"value": stmt.excluded.value})


def pending(session: Session) -> Pending:
    """The session's buffer (made, and hooked into the session, on first use)."""
    found = session.info.get(_KEY)
    if isinstance(found, Pending):
        return found
    buffer = Pending()
    session.info[_KEY] = buffer

    @event.listens_for(session, "do_orm_execute")
    def _before_read(state: ORMExecuteState) -> None:
        if state.execution_options.get("maildesk_pending_aware"):
            if buffer.rows["ticket"] and "ticket" in _tables_of(state.statement):
                buffer.flush(session)  # new tickets are read as rows, never merged
            if _only_tickets_changed(session):
                state.update_execution_options(autoflush=False)
            return
        if buffer.empty():
            return
        tables = _tables_of(state.statement)
        if not tables or buffer.busy(tables):  # text(): it may read anything
            buffer.flush(session)

    @event.listens_for(session, "before_flush")
    def _before_orm_flush(sess: Session, *_: Any) -> None:
        if sess.new or sess.deleted:  # rows of its own: they come after the buffer's
            buffer.flush(sess)

    @event.listens_for(session, "before_commit")
    def _before_commit(sess: Session) -> None:
        buffer.flush(sess)

    @event.listens_for(session, "after_soft_rollback")
    def _after_rollback(_sess: Session, _previous: Any) -> None:
        buffer.discard()

    return buffer


def _tables_of(statement: Any) -> set[str]:
    return {t.name for t in find_tables(statement, include_crud=True)}


def _only_tickets_changed(session: Session) -> bool:
    """Nothing new or deleted in the session, and every changed object is a ticket."""
    return not session.new and not session.deleted and all(
        isinstance(obj, Ticket) for obj in session.dirty
    )


def add_event(
    session: Session, ticket_id: int, at: datetime, actor: str, kind: str, detail: str
) -> None:
    """An event on a ticket (waits in the buffer)."""
    pending(session).add(
        "event", {"ticket_id": ticket_id, "at": at, "actor": actor, "kind": kind, "detail": detail}
    )


def flush(session: Session) -> None:
    """Write what waits now (a mail in a SAVEPOINT, before it is released)."""
    found = session.info.get(_KEY)
    if isinstance(found, Pending):
        found.flush(session)


def discard(session: Session) -> None:
    """Forget what waits (its SAVEPOINT rolled back)."""
    found = session.info.get(_KEY)
    if isinstance(found, Pending):
        found.discard()
