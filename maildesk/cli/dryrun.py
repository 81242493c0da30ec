"""`maildesk ingest --dry-run`: what each mail would become, nothing stored.

Each mail runs through the real pipeline inside a transaction that is rolled
back, with attachments written to a throw-away directory. Mails of one dry run
do not see each other (a reply among them is not threaded to its original),
and on PostgreSQL the ticket number sequence advances (IDs may skip).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from maildesk.config.runtime import Runtime
from maildesk.core.parse import InboundMail
from maildesk.core.tid import format_tid
from maildesk.intake.sources import iter_messages, not_mail
from maildesk.spam.model import SpamFilter, SpamThresholds
from maildesk.storage.models import Inbound, Outbox, Ticket
from maildesk.work.handle import NotifyPolicy, Tools, handle
from maildesk.work.parsepool import ParseFailure, ParserPool


@dataclass(frozen=True)
class Preview:
    label: str
    outcome: str  # new, joins, duplicate, error, not-mail
    line: str


def _one(
    engine: Engine,
    runtime: Runtime,
    label: str,
    parsed: InboundMail,
    raw: bytes,
    spam: SpamFilter,
    notify: NotifyPolicy | None,
) -> Preview:
    now = datetime.now(UTC)
    with Session(engine) as session:
        last_ticket = session.exec(select(func.max(Ticket.id))).one() or 0
        last_mail = session.exec(select(func.max(Outbox.id))).one() or 0
        row = Inbound(
            received_at=now, source=f"file:{label}"[:200], raw=raw, size=len(raw), status="new"
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        try:
            done = handle(session, row, parsed, Tools(runtime, spam, notify), now)
            outcome, ticket_id = done.outcome, done.ticket_id
            session.flush()
            ticket = session.get(Ticket, ticket_id) if ticket_id else None
            summary = (
                f"{ticket.status}, {ticket.priority}, SLA {ticket.sla_level}, assignee "
                + (
                    ticket.assignee
                    or (f"group {ticket.assigned_group}" if ticket.assigned_group else "-")
                )
                if ticket is not None
                else None
            )
            mails = session.exec(
                select(Outbox.kind, Outbox.recipients)
                .where(col(Outbox.id) > last_mail)
                .order_by(col(Outbox.id))
            ).all()
        finally:
            session.rollback()
    sends = "; ".join(f"{kind} to {', '.join(to)}" for kind, to in mails) or "no mail"
    if outcome == "duplicate" and ticket_id:
        return Preview(label, "duplicate", f"{label}: already stored on {format_tid(ticket_id)}")
    if summary is None or not ticket_id:
        return Preview(label, "orphan", f"{label}: delivery report for no known mail; no ticket")
    if ticket_id > last_ticket:
        return Preview(label, "new", f"{label}: new ticket ({summary}); would send: {sends}")
    tid = format_tid(ticket_id)
    return Preview(label, "joins", f"{label}: joins {tid}; would send: {sends}")


async def preview_paths(
    engine: Engine,
    runtime: Runtime,
    paths: Sequence[Path],
    notify: NotifyPolicy | None,
    emit: Callable[[Preview], None],
) -> dict[str, int]:
    settings = runtime.settings
    spam = SpamFilter.load(
        settings.spam_model_path, SpamThresholds(settings.spam_ham_below, settings.spam_spam_above)
    )
    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    counts: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="maildesk-dry-run-") as scratch:
            scratch_settings = settings.model_copy(update={"data_dir": Path(scratch)})
            scratch_runtime = replace(runtime, settings=scratch_settings)
            for label, raw in iter_messages(paths):
                why = not_mail(raw)
                if why is not None:
                    preview = Preview(label, "not-mail", f"{label}: {why}; skipped")
                else:
                    parsed = await parser.parse(raw)
                    if isinstance(parsed, ParseFailure):
                        line = f"{label}: would be kept raw as an error: {parsed.error}"
                        preview = Preview(label, "error", line)
                    else:
                        preview = await asyncio.to_thread(
                            _one, engine, scratch_runtime, label, parsed, raw, spam, notify
                        )
                counts[preview.outcome] = counts.get(preview.outcome, 0) + 1
                emit(preview)
    finally:
        parser.close()
    return counts
