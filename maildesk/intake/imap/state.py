"""Per-mailbox poller state in the kv table: UIDVALIDITY, the highest UID
processed, and the failure count of each message that failed to ingest.

Keys (`<mb>` is `Mailbox.key`): `<mb>:uidvalidity`, `<mb>:last_uid`,
`<mb>:fail:<uid>` = JSON {"count": n, "error": "..."}. All calls block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from maildesk.storage.models import KV


@dataclass(frozen=True)
class Failure:
    count: int
    error: str


@dataclass
class MailboxState:
    uidvalidity: int | None = None
    last_uid: int = 0
    failures: dict[int, Failure] = field(default_factory=dict)


class StateStore:
    def __init__(self, engine: Engine, key: str) -> None:
        self._engine = engine
        self._key = key

    def load(self) -> MailboxState:
        state = MailboxState()
        with Session(self._engine) as session:
            rows = session.exec(
                select(KV).where(col(KV.key).startswith(self._key + ":", autoescape=True))
            ).all()
        for row in rows:
            suffix = row.key[len(self._key) + 1 :]
            if suffix == "uidvalidity":
                state.uidvalidity = int(row.value)
            elif suffix == "last_uid":
                state.last_uid = int(row.value)
            elif suffix.startswith("fail:") and suffix[5:].isdigit():
                data = json.loads(row.value)
                state.failures[int(suffix[5:])] = Failure(int(data["count"]), str(data["error"]))
        return state

    def reset(self, uidvalidity: int) -> MailboxState:
        """A new UIDVALIDITY: old UIDs mean nothing now; start a full rescan."""
        with Session(self._engine) as session:
            session.exec(delete(KV).where(col(KV.key).startswith(self._key + ":", autoescape=True)))
            session.add(KV(key=f"{self._key}:uidvalidity", value=str(uidvalidity)))
            session.add(KV(key=f"{self._key}:last_uid", value="0"))
            session.commit()
        return MailboxState(uidvalidity=uidvalidity)

    def save(
        self,
        last_uid: int | None = None,
        failures: dict[int, Failure] | None = None,
        cleared: set[int] | None = None,
    ) -> None:
        """Record progress and failure counts in one transaction, as upserts (no row is
        read first)."""
        rows = []
        if last_uid is not None:
            rows.append({"key": f"{self._key}:last_uid", "value": str(last_uid)})
        for uid, failure in (failures or {}).items():
            value = json.dumps({"count": failure.count, "error": failure.error[:2000]})
            rows.append({"key": f"{self._key}:fail:{uid}", "value": value})
        with self._engine.begin() as conn:
            if rows:
                conn.execute(_upsert(conn.dialect.name), rows)
            if cleared:
                keys = [f"{self._key}:fail:{uid}" for uid in cleared]
                conn.execute(delete(KV).where(col(KV.key).in_(keys)))


def _upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE, in the engine's dialect."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(KV)
    return stmt.on_conflict_do_update(
        index_elements=[col(KV.key)], set_={"value": stmt.excluded.value}
    )
