"""What the poller reads from and writes to the inbound table."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert
from sqlmodel import Session, col, select

from maildesk.storage.models import Inbound, utcnow


@dataclass(frozen=True)
class Verdict:
    status: str  # done, duplicate, failed (the pipeline's inbound status)
    error: str | None


def verdicts_of(engine: Engine, inbound_ids: list[int]) -> dict[int, Verdict]:
    """The pipeline's decision on each row it has finished (rows still 'new' are left out)."""
    with Session(engine) as session:
        rows = session.exec(
            select(Inbound.id, Inbound.status, Inbound.error).where(
                col(Inbound.id).in_(inbound_ids), Inbound.status != "new"
            )
        ).all()
    return {int(i): Verdict(s, e) for i, s, e in rows if i is not None}


def record_failed(engine: Engine, items: list[tuple[str, bytes, str]], attempts: int) -> None:
    """Keep mails that never got into the spool as error records (`maildesk errors`),
    raw bytes included: (source, raw, error) each."""
    now = utcnow()
    rows = [
        {
            "received_at": now,
            "source": source[:200],
            "envelope_from": None,
            "envelope_to": "",
            "raw": raw,
            "size": len(raw),
            "status": "failed",
            "attempts": attempts,
            "error": error[:2000],
            "processed_at": now,
        }
        for source, raw, error in items
    ]
    with engine.begin() as conn:
        conn.execute(insert(Inbound), rows)
