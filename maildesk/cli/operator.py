"""`maildesk do MD-12 '#assign bob' '#priority high'`: staff commands from the shell.

The same parser, checks, events and customer mails as commands by mail
(maildesk.core.commands, maildesk.core.answer.apply_commands, maildesk.core.updates); the author is
the operator's staff identity (MAILDESK_OPERATOR or `--as`), who must be in
rules.yaml. If any line is invalid nothing is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session, select

from maildesk.config.runtime import Runtime
from maildesk.core.answer import apply_commands, command_errors
from maildesk.core.commands import parse_commands
from maildesk.core.decision import Decision
from maildesk.core.parse import InboundMail
from maildesk.core.tid import format_tid, parse_tid
from maildesk.core.updates import customer_updates
from maildesk.errors import MaildeskError, NotFound
from maildesk.storage import enqueue, facts, store
from maildesk.storage.models import Event, Ticket
from maildesk.storage.tickets import ticket_state
from maildesk.work.quarantine import mark_ticket

if TYPE_CHECKING:
    from maildesk.spam import SpamFilter

MAIL_ONLY = frozenset({"internal", "canned"})  # about the text of the mail they start


def run_commands(
    engine: Engine,
    runtime: Runtime,
    tid: str,
    lines: list[str],
    author: str,
    spam_filter: Callable[[], SpamFilter | None] = lambda: None,
    now: datetime | None = None,
) -> list[str]:
    """Apply the command lines to the ticket as `author`; returns what was recorded."""
    now = now or datetime.now(UTC)
    author = author.strip().lower()
    if not author:
        raise MaildeskError("who are you? set MAILDESK_OPERATOR to your staff address, or --as")
    if runtime.rules.member(author) is None:
        raise MaildeskError(f"--as {author}: not a staff member in {runtime.settings.rules}")
    number = parse_tid(tid)
    if number is None:
        raise NotFound(f"{tid!r} is not a ticket ID (expected [MD-42], MD-42 or 42)")
    if not lines:
        raise MaildeskError("no commands given, e.g. maildesk do MD-12 '#assign bob'")
    errors = [f"{line}: each argument is one #command" for line in lines
              if not line.strip().startswith("#")]
    parsed = parse_commands("\n".join(lines), runtime.rules, runtime.sla.levels, author, now)
    errors += parsed.errors
    errors += [f"{c.line}: only in a mail" for c in parsed.commands if c.name in MAIL_ONLY]
    with Session(engine) as session:
        ticket = session.exec(
            select(Ticket).where(Ticket.id == number).with_for_update()
        ).first()
        if ticket is None:
            raise NotFound(f"no ticket {format_tid(number)}")
        state = ticket_state(session, ticket)
        targets = facts.merge_targets(session, [c.ticket for c in parsed.commands if c.ticket])
        errors += command_errors(parsed.commands, state, targets, runtime.policy)
        if errors:
            raise MaildeskError("nothing applied:\n" + "\n".join(errors))
        applied = apply_commands(parsed.commands, state, author)
        updates = customer_updates(
            state, applied.status, applied.changes, runtime.rules.customer_updates.enabled()
        )
        decision = Decision(action="append", message_kind="staff", ticket=state,
                            status=applied.status, changes=applied.changes, mails=updates,
                            events=applied.events)
        updated = store.update_ticket(session, decision, now, runtime.sla)
        actor = f"{author} (maildesk do)"
        for kind, detail in applied.events:
            session.add(Event(ticket_id=number, at=now, actor=actor, kind=kind, detail=detail))
        enqueue.queue_mails(session, ticket_state(session, updated),
                          _no_mail(updated.subject, author), updates, runtime, now)
        said = [f"{kind}: {detail}" for kind, detail in applied.events]
        if applied.mark is not None:
            said.append(mark_ticket(session, number, applied.mark == "spam", runtime,
                                    spam_filter(), actor, now))
        session.commit()
    return said


def _no_mail(subject: str, author: str) -> InboundMail:
    """What the mail builders read of 'the mail that caused this': nothing, here."""
    return InboundMail(
        message_id=None, subject=subject, from_addr=author, from_name="", reply_to=(), to=(),
        cc=(), date=None, in_reply_to=(), references=(), text="", html=None, attachments=(),
        content_type="text/plain", content_hash="", headers=(),
    )
