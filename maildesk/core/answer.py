"""A mail from proven staff on a ticket: an answer to relay, a hidden note, or an
automatic mail to record and drop. Pure.

- automatic (auto-reply headers or subject, or no In-Reply-To/References at all,
  as a vacation responder answering a notification writes): recorded as an event,
  relayed to nobody;
- `#internal` as the first line, or sent to the comment address: a hidden note,
  mailed to the other staff on the ticket, never to the customer;
- anything else: the answer, with quoted history and signature removed, goes to
  the requester with the ticket's cc list visible; the ticket is "answered";
- unless another staff member answered publicly after the mail it replies to (the
  collision guard): then it is held and its author told; `#send` as the first line
  of a reply to that notice sends it, anything else drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from maildesk.core.classify import Classification
from maildesk.core.commands import Command, Parsed, first_line, parse_commands
from maildesk.core.decision import (
    Collision,
    Decision,
    HeldAnswer,
    MailIntent,
    Policy,
    SenderFacts,
    TicketState,
)
from maildesk.core.identity import Identity
from maildesk.core.parse import InboundMail
from maildesk.core.quotes import StrippedReply, strip_reply
from maildesk.core.render import render_canned
from maildesk.core.tid import format_tid
from maildesk.core.updates import customer_updates, resolve_with_answer

SEND_MARK = "#send"
# Parsed, but not built yet: refused with a clear line rather than silently ignored.
NOT_YET: frozenset[str] = frozenset()


def decide_staff_mail(
    mail: InboundMail,
    kind: Classification,
    ticket: TicketState,
    identity: Identity,
    policy: Policy,
    facts: SenderFacts | None,
    now: datetime,
) -> Decision:
    """A proven staff member's mail on a ticket: a held answer released, an automatic
    mail noted, or their #commands applied and then a note, an answer, or nothing more."""
    author = identity.address
    if facts is not None and facts.held is not None and kind.kind != "auto_reply":
        return _release_or_drop(mail, ticket, author, facts.held, policy)
    if kind.kind == "auto_reply" or not (mail.in_reply_to or mail.references):
        why = "; ".join(kind.reasons) if kind.kind == "auto_reply" else "no In-Reply-To"
        return Decision(
            action="append",
            message_kind="auto_reply",
            ticket=ticket,
            visibility="internal",
            events=(("staff_auto", f"automatic mail from {author} ({why}): not relayed"),),
        )
    parsed = parse_commands(mail.text, policy.rules, policy.sla.levels, author, now)
    targets = facts.merge_targets if facts is not None else ()
    errors = (*parsed.errors, *command_errors(parsed.commands, ticket, targets, policy))
    if errors:
        return _refused(ticket, author, errors)
    done = _commanded(mail, parsed, ticket, author, policy)
    if done.applied.mark is not None:  # #spam / #ham: a staff decision, never an answer
        return _internal(done, done.applied.events, mark=done.applied.mark)
    if identity.comment or "internal" in done.names:
        return _note(done, author)
    if not strip_reply(done.body, None).text.strip() and parsed.commands:  # commands only
        return _internal(done, done.applied.events, mails=done.updates)
    if not done.ticket.requester:
        unsent = ("answer", "not relayed: the ticket has no usable customer address")
        return _internal(done, (*done.applied.events, unsent))
    if facts is not None and facts.collision is not None:
        return _held_answer(done, author, facts.collision)
    return _relayed(done, author, policy)


@dataclass(frozen=True)
class _Commanded:
    """A staff mail once its #commands are applied: the ticket as they leave it, the
    customer updates they cause, and the text that remains to relay or note."""

    ticket: TicketState
    applied: Applied
    names: frozenset[str]
    updates: tuple[MailIntent, ...]
    body: str
    html: str | None


def _commanded(
    mail: InboundMail, parsed: Parsed, ticket: TicketState, author: str, policy: Policy
) -> _Commanded:
    applied = apply_commands(parsed.commands, ticket, author)
    ticket = with_people(ticket, applied.changes)  # an answer goes to the cc list it sets
    updates = customer_updates(
        ticket, applied.status, applied.changes, policy.rules.customer_updates.enabled()
    )
    names = frozenset(c.name for c in parsed.commands)
    if applied.status == "resolved" and "time" not in names and not ticket.time_spent_minutes:
        # HelpDeskEddy asks at close: the author can answer with a #time line
        updates += (MailIntent("ask_time", (author,), "en", "resolved", author=author),)
    body = parsed.body if parsed.commands else mail.text
    canned = [c.value for c in parsed.commands if c.name == "canned" and c.value]
    if canned:
        body = "\n\n".join([*_canned(canned, ticket, author, policy), body]).strip("\n")
    html = None if parsed.commands else mail.html
    return _Commanded(ticket, applied, names, updates, body, html)


def _internal(
    done: _Commanded,
    events: tuple[tuple[str, str], ...],
    mails: tuple[MailIntent, ...] = (),
    mark: Literal["spam", "ham"] | None = None,
) -> Decision:
    """Recorded on the ticket, relayed to no customer."""
    return Decision(
        action="append",
        message_kind="staff",
        ticket=done.ticket,
        visibility="internal",
        mails=mails,
        events=events,
        status=done.applied.status,
        changes=done.applied.changes,
        mark=mark,
    )


def _note(done: _Commanded, author: str) -> Decision:
    """#internal, or a mail to the comment address: colleagues are told, no customer."""
    reply = strip_reply(done.body, done.html)
    colleagues = _colleagues(done.ticket, author)
    told: tuple[MailIntent, ...] = ()
    if colleagues and done.body.strip():
        told = (MailIntent("notification", colleagues, "en", "note", author=author, reply=reply),)
    note = (("note", f"hidden note by {author}"),) if done.body.strip() else ()
    return _internal(done, (*done.applied.events, *note), mails=told + done.updates)


def _held_answer(done: _Commanded, author: str, collision: Collision) -> Decision:
    """Another staff member answered meanwhile: the answer waits for #send."""
    reply = strip_reply(done.body, done.html)
    return Decision(
        action="append",
        message_kind="staff",
        ticket=done.ticket,
        visibility="internal",
        mails=(MailIntent("held", (author,), "en", "answer", author=author, reply=reply,
                          collision=collision),),
        events=(("held", f"answer by {author} held: {collision.other} answered after the "
                 "mail it replies to; #send releases it"),),
    )


def _relayed(done: _Commanded, author: str, policy: Policy) -> Decision:
    """The answer goes to the customer (with a resolution mail when it resolves)."""
    status, events = done.applied.status, done.applied.events
    answered = _answer(done.ticket, author, strip_reply(done.body, done.html), policy, None)
    return replace(
        answered,
        mails=resolve_with_answer(answered.mails, done.updates),
        events=(*events, *answered.events) if status is None else (
            *events, *(e for e in answered.events if e[0] != "status")),
        status=status or answered.status,
        changes=done.applied.changes,
    )


def _refused(ticket: TicketState, author: str, errors: tuple[str, ...]) -> Decision:
    """An invalid command line: nothing of the mail takes effect; the author is told."""
    return Decision(
        action="append",
        message_kind="staff",
        ticket=ticket,
        visibility="internal",
        mails=(MailIntent("refused", (author,), "en", "answer", author=author, lines=errors),),
        events=(("refused", f"mail by {author} not applied: " + "; ".join(errors)),),
    )


def command_errors(
    commands: tuple[Command, ...],
    ticket: TicketState,
    targets: tuple[TicketState, ...],
    policy: Policy,
) -> list[str]:
    """What the parser cannot know: other tickets, canned answers, this ticket's people."""
    errors: list[str] = []
    known = {t.id: t for t in targets}
    names = {c.name for c in commands}
    if {"spam", "ham"} <= names:
        errors.append("#spam and #ham: one or the other")
    for c in commands:
        if c.name == "new-for":
            errors.append(f"{c.line}: only on a new mail forwarded to support, not on a ticket")
        elif c.name in NOT_YET:
            errors.append(f"{c.line}: not available yet")
        elif c.name == "send":
            errors.append(f"{c.line}: only as the first line of a reply to a [held] notice")
        elif c.name == "merge" and c.ticket is not None:
            target = known.get(c.ticket)
            if c.ticket == ticket.id:
                errors.append(f"{c.line}: a ticket cannot be merged into itself")
            elif target is None:
                errors.append(f"{c.line}: no ticket {format_tid(c.ticket)}")
            elif target.status == "spam":
                errors.append(f"{c.line}: {format_tid(c.ticket)} is spam")
            elif target.merged_into is not None:
                errors.append(f"{c.line}: {format_tid(c.ticket)} was merged into "
                              f"{format_tid(target.merged_into)}; merge into that one")
        elif c.name == "canned" and c.value not in policy.canned:
            listed = ", ".join(sorted(policy.canned)) or "none in templates/canned/"
            errors.append(f"{c.line}: no canned answer {c.value!r} (known: {listed})")
        elif c.name == "cc" and not c.add and c.value == ticket.requester:
            errors.append(f"{c.line}: the requester cannot be removed")
    return errors


def _canned(names: list[str], ticket: TicketState, author: str, policy: Policy) -> list[str]:
    member = policy.rules.member(author)
    context = {
        "tid": format_tid(ticket.id),
        "subject": ticket.subject,
        "customer_name": ticket.requester_name,
        "customer_email": ticket.requester,
        "author": member.name if member else author,
    }
    texts = []
    for name in names:
        sources = policy.canned[name]
        source = sources.get(ticket.language) or sources.get("en") or next(iter(sources.values()))
        texts.append(render_canned(source, context))
    return texts


@dataclass(frozen=True)
class Applied:
    """What a mail's (or `maildesk do`'s) commands do to the ticket."""

    changes: tuple[tuple[str, str], ...]
    status: str | None
    events: tuple[tuple[str, str], ...]
    mark: Literal["spam", "ham"] | None = None


STATUS_OF = {"close": "closed", "resolve": "resolved", "reopen": "open", "wait": "pending"}
FIELD_OF = {
    "assign": "assignee",
    "group": "assigned_group",
    "priority": "priority",
    "category": "category",
    "sla": "sla_level",
}


def apply_commands(commands: tuple[Command, ...], ticket: TicketState, author: str) -> Applied:
    """The ticket changes the commands ask for, the new status, and an event for each."""
    changes: list[tuple[str, str]] = []
    events: list[tuple[str, str]] = []
    status: str | None = None
    mark: Literal["spam", "ham"] | None = None
    current = {
        "assignee": ticket.assignee or "(nobody)",
        "assigned_group": ticket.group or "(none)",
        "priority": ticket.priority,
        "category": ticket.category,
        "sla_level": ticket.sla_level,
    }
    for command in commands:
        why = f"({command.line} by {author})"
        if command.name in STATUS_OF:
            status = STATUS_OF[command.name]
            events.append(("status", f"{ticket.status} -> {status} {why}"))
            if command.until is not None:
                changes.append(("pending_until", command.until.isoformat()))
        elif command.name in FIELD_OF and command.value is not None:
            field = FIELD_OF[command.name]
            changes.append((field, command.value))
            events.append((field.replace("assigned_group", "group"),
                           f"{current[field]} -> {command.value} {why}"))
        elif command.name == "time" and command.minutes is not None:
            changes.append(("time_spent", str(command.minutes)))
            events.append(("time", f"{command.minutes} min {why}"))
        elif command.name == "co" and command.value:
            changes.append(("co", command.value))
            events.append(("co", f"co-assignee {command.value} {why}"))
        elif command.name == "cc" and command.value:
            changes.append(("cc_add" if command.add else "cc_remove", command.value))
            verb = "added" if command.add else "removed"
            events.append(("cc", f"{verb} {command.value} {why}"))
        elif command.name == "merge" and command.ticket is not None:
            changes.append(("merged_into", str(command.ticket)))
            status = "closed"
            events.append(("merge", f"merged into {format_tid(command.ticket)} {why}"))
        elif command.name in ("spam", "ham"):
            mark = "spam" if command.name == "spam" else "ham"
    return Applied(tuple(changes), status, tuple(events), mark)


def _release_or_drop(
    mail: InboundMail, ticket: TicketState, author: str, held: HeldAnswer, policy: Policy
) -> Decision:
    """The author's reply to a collision notice: `#send` first sends the held answer."""
    if first_line(mail.text).lower() != SEND_MARK:
        return Decision(
            action="append",
            message_kind="staff",
            ticket=ticket,
            visibility="internal",
            held_done=held.message_id,
            events=(("held", f"held answer by {author} dropped (no #send)"),),
        )
    reply = strip_reply(held.text, None)
    decision = _answer(ticket, author, reply, policy, held.files)
    return replace(
        decision,
        visibility="internal",  # this mail is the #send; the held one is the answer
        held_done=held.message_id,
        events=(("held", f"held answer by {author} released with #send"), *decision.events),
    )


def _answer(
    ticket: TicketState,
    author: str,
    reply: StrippedReply,
    policy: Policy,
    files: tuple[tuple[str, str, bytes], ...] | None,
) -> Decision:
    colleagues = _colleagues(ticket, author)
    cc = tuple(sorted(a for a in ticket.cc - ticket.staff if a != ticket.requester
                      and a not in policy.own_addresses and policy.rules.member(a) is None))
    mails = [
        MailIntent("answer", (ticket.requester,), ticket.language, "answer", cc=cc,
                   author=author, reply=reply, files=files)
    ]
    if colleagues:
        mails.append(
            MailIntent("notification", colleagues, "en", "answer", author=author, reply=reply)
        )
    events = [("answer", f"by {author} to {', '.join((ticket.requester, *cc))}"
               + (" (relayed whole: nothing left after removing quotes)" if reply.whole else
                  f" ({reply.removed_lines} quoted lines removed)"))]
    status = "answered" if ticket.status != "answered" else None
    if status:
        events.append(("status", f"{ticket.status} -> answered (staff answered)"))
    return Decision(
        action="append",
        message_kind="staff",
        ticket=ticket,
        visibility="public",
        mails=tuple(mails),
        events=tuple(events),
        status=status,
        first_response=ticket.first_response_at is None,
    )


def _colleagues(ticket: TicketState, author: str) -> tuple[str, ...]:
    """The other staff on the ticket: the assignee, co-assignees and staff who wrote."""
    people = [a for a in (ticket.assignee, *sorted(ticket.co), *sorted(ticket.staff))
              if a and a != author]
    return tuple(dict.fromkeys(people))


def with_people(ticket: TicketState, changes: tuple[tuple[str, str], ...]) -> TicketState:
    """The ticket as #co and #cc leave it."""
    cc, co = set(ticket.cc), set(ticket.co)
    for field, value in changes:
        if field == "cc_add":
            cc.add(value)
        elif field == "cc_remove":
            cc.discard(value)
        elif field == "co":
            co.add(value)
    return replace(ticket, cc=frozenset(cc), co=frozenset(co),
                   participants=ticket.participants | cc)

