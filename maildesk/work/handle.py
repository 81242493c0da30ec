"""The flow of one mail (DESIGN.md), in one function: `handle`.

dedupe -> classify -> authorise -> spam -> load facts (thread, sender, workload)
-> decide -> apply (ticket, message, events) -> enqueue (build the mails and put
them in the outbox). Every step but the three storage calls is pure (maildesk.core); the
caller holds the transaction and records the result on the inbound row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from maildesk.config.runtime import Runtime
from maildesk.core.classify import classify
from maildesk.core.decide import Decision, decide
from maildesk.core.identity import authorise
from maildesk.core.parse import InboundMail
from maildesk.storage import facts, store
from maildesk.storage.models import Inbound
from maildesk.work.parsepool import ParseFailure
from maildesk.work.quarantine import mark_ticket
from maildesk.work.spamlearn import Lesson, queue_lesson

if TYPE_CHECKING:
    from maildesk.spam import SpamFilter, SpamVerdict

log = logging.getLogger(__name__)

# Whether a mail's confirmations/notifications go out (`maildesk ingest` imports: see there).
NotifyPolicy = Callable[[InboundMail, datetime], bool]


@dataclass(frozen=True)
class Processed:
    """What became of one spooled mail: recorded on its inbound row by the caller."""

    outcome: str  # done, duplicate, failed, skipped
    ticket_id: int | None = None
    dedupe_key: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class KnownKeys:
    """Dedupe keys looked up for a whole chunk at once: `checked` were looked up (keys
    that occur once in the chunk), `stored` maps those already stored to their ticket."""

    checked: frozenset[str] = frozenset()
    stored: Mapping[str, int] = field(default_factory=dict)

    def ticket_of(self, session: Session, key: str) -> int | None:
        if key in self.checked:
            return self.stored.get(key)
        return facts.is_duplicate(session, key)


@dataclass
class Tools:
    """What a mail is handled with: the config snapshot, the spam filter, whether mails
    go out (imports), the chunk's dedupe keys, and where sure verdicts are queued
    (MAILDESK_SPAM_LEARN=sure)."""

    runtime: Runtime
    spam_filter: SpamFilter | None = None
    notify: NotifyPolicy | None = None
    known: KnownKeys = field(default_factory=KnownKeys)
    lessons: list[Lesson] | None = None


def handle(
    session: Session, row: Inbound, parsed: InboundMail | ParseFailure, tools: Tools,
    now: datetime,
) -> Processed:
    """The flow of one mail. The inbound row is only read."""
    if isinstance(parsed, ParseFailure):
        log.error("inbound %s kept raw, not processed: %s", row.id, parsed.error)
        return Processed("failed", error=parsed.error)
    mail, runtime = parsed, tools.runtime
    existing = tools.known.ticket_of(session, mail.dedupe_key)
    if existing is not None:
        return Processed("duplicate", existing, mail.dedupe_key[:600])
    kind = classify(mail, row.envelope_from, frozenset(runtime.settings.support_addresses))
    envelope_to = [a for a in row.envelope_to.split(",") if a]
    identity = authorise(mail, envelope_to, runtime.trust)
    verdict = None
    if tools.spam_filter is not None and not identity.is_staff:
        verdict = tools.spam_filter.score(mail)
    live = not row.source.startswith("file:")  # not an import (`maildesk ingest`)
    known = facts.load_facts(session, mail, kind, identity, envelope_to, runtime, now, live)
    decision = decide(mail, replace(known, spam=verdict.band if verdict else "ham"),
                      runtime.policy, now)
    if (decision.mails or decision.alerts) and tools.notify and not tools.notify(mail, now):
        decision = _muted(decision)
    applied = store.apply(session, decision, row, mail, runtime, now, verdict, identity)
    store.enqueue(session, applied, mail, decision, runtime, now)
    ticket_id = applied.ticket_id
    _after_apply(session, tools, decision, ticket_id, mail, verdict, identity.address, now, live)
    return Processed("done", ticket_id, mail.dedupe_key[:600], _error_of(decision, ticket_id))


def _muted(decision: Decision) -> Decision:
    """An import of old mail: stored, but nobody is mailed."""
    note = ("imported", "stored without sending any mail (import)")
    return replace(decision, mails=(), alerts=(), events=(*decision.events, note))


def _after_apply(
    session: Session, tools: Tools, decision: Decision, ticket_id: int | None,
    mail: InboundMail, verdict: SpamVerdict | None, author: str, now: datetime, live: bool,
) -> None:
    """#spam / #ham by mail mark the ticket; a new ticket from live mail scored in a sure
    band is queued to be learned as its verdict, after the commit."""
    if decision.mark is not None and ticket_id is not None:
        mark_ticket(session, ticket_id, decision.mark == "spam", tools.runtime,
                    tools.spam_filter, author, now)
    sure = verdict is not None and verdict.scored and verdict.band != "unsure"
    new = decision.action == "new_ticket" and ticket_id is not None
    if tools.lessons is not None and sure and live and new:
        assert verdict is not None and ticket_id is not None
        tools.lessons.append(queue_lesson(session, ticket_id, mail, verdict.band == "spam"))


def _error_of(decision: Decision, ticket_id: int | None) -> str | None:
    if decision.action == "refused":
        return "; ".join(d for k, d in decision.events if k == "refused")[:2000]
    if ticket_id is None:
        return "delivery report for a mail we do not know; kept, no ticket"
    return None
