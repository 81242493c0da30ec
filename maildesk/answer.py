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

from dataclasses import replace
from datetime import datetime

from maildesk.classify import Classification
from maildesk.commands import Command, parse_commands
from maildesk.decision import (
    Decision,
    HeldAnswer,
    MailIntent,
    Policy,
    SenderFacts,
    TicketState,
)
from maildesk.identity import Identity
from maildesk.parse import InboundMail
from maildesk.quotes import StrippedReply, strip_reply
from maildesk.updates import customer_updates, resolve_with_answer

SEND_MARK = "#send"
# Parsed, but not built yet: refused with a clear line rather than silently ignored.
NOT_YET = frozenset({"co", "cc", "merge", "new-for", "canned", "spam", "ham", "send"})


def decide_staff_mail(
    mail: InboundMail,
    kind: Classification,
    ticket: TicketState,
    identity: Identity,
    policy: Policy,
    facts: SenderFacts | None,
    now: datetime,
) -> Decision:
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
    later = [c.line for c in parsed.commands if c.name in NOT_YET]
    errors = (*parsed.errors, *(f"{line}: not available yet" for line in later))
    if errors:
        return _refused(ticket, author, errors)
    changes, status, events = apply_commands(parsed.commands, ticket, author)
    updates = customer_updates(ticket, status, changes, policy.rules.customer_updates.enabled())
    command_names = {c.name for c in parsed.commands}
    body = parsed.body if parsed.commands else mail.text
    html = None if parsed.commands else mail.html
    colleagues = _colleagues(ticket, author)
    if identity.comment or "internal" in command_names:
        reply = strip_reply(body, html)
        told = (
            (MailIntent("notification", colleagues, "en", "note", author=author, reply=reply),)
            if colleagues and body.strip()
            else ()
        ) + updates
        note = (("note", f"hidden note by {author}"),) if body.strip() else ()
        return Decision(
            action="append",
            message_kind="staff",
            ticket=ticket,
            visibility="internal",
            mails=told,
            events=(*events, *note),
            status=status,
            changes=changes,
        )
    if not strip_reply(body, None).text.strip() and parsed.commands:  # commands only
        return Decision(
            action="append",
            message_kind="staff",
            ticket=ticket,
            visibility="internal",
            mails=updates,
            events=events,
            status=status,
            changes=changes,
        )
    if not ticket.requester:
        return Decision(
            action="append",
            message_kind="staff",
            ticket=ticket,
            visibility="internal",
            events=(*events,
                    ("answer", "not relayed: the ticket has no usable customer address")),
            status=status,
            changes=changes,
        )
    reply = strip_reply(body, html)
    if facts is not None and facts.collision is not None:
        other = facts.collision.other
        return Decision(
            action="append",
            message_kind="staff",
            ticket=ticket,
            visibility="internal",
            mails=(MailIntent("held", (author,), "en", "answer", author=author, reply=reply,
                              collision=facts.collision),),
            events=(("held", f"answer by {author} held: {other} answered after the mail it "
                     "replies to; #send releases it"),),
        )
    answered = _answer(ticket, author, reply, policy, None)
    return replace(
        answered,
        mails=resolve_with_answer(answered.mails, updates),
        events=(*events, *answered.events) if status is None else (
            *events, *(e for e in answered.events if e[0] != "status")),
        status=status or answered.status,
        changes=changes,
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


STATUS_OF = {"close": "closed", "resolve": "resolved", "reopen": "open", "wait": "pending"}
FIELD_OF = {
    "assign": "assignee",
    "group": "assigned_group",
    "priority": "priority",
    "category": "category",
    "sla": "sla_level",
}


def apply_commands(
    commands: tuple[Command, ...], ticket: TicketState, author: str
) -> tuple[tuple[tuple[str, str], ...], str | None, tuple[tuple[str, str], ...]]:
    """The ticket changes the commands ask for, the new status, and an event for each."""
    changes: list[tuple[str, str]] = []
    events: list[tuple[str, str]] = []
    status: str | None = None
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
    return tuple(changes), status, tuple(events)


def _release_or_drop(
    mail: InboundMail, ticket: TicketState, author: str, held: HeldAnswer, policy: Policy
) -> Decision:
    """The author's reply to a collision notice: `#send` first sends the held answer."""
    if _first_line(mail.text).lower() != SEND_MARK:
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
    """The other staff on the ticket: the assignee and staff who wrote there."""
    people = [a for a in (ticket.assignee, *sorted(ticket.staff)) if a and a != author]
    return tuple(dict.fromkeys(people))


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
