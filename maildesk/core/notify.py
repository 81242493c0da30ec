"""Turn a Decision's mail intents into composed outbound mails (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from maildesk.core.compose import OutgoingMail, compose
from maildesk.core.decide import MailIntent, TicketState
from maildesk.core.parse import InboundMail
from maildesk.core.promise import promise_text
from maildesk.core.quotes import strip_reply
from maildesk.core.render import RenderedMail, Templates
from maildesk.core.replytoken import rating_address, reply_address
from maildesk.core.rules import RulesConfig
from maildesk.core.sla import SlaConfig
from maildesk.core.tid import format_tid, tagged_subject

BODY_EXCERPT_CHARS = 20_000
NOTIFY_ATTACH_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Sender:
    """Who our mail comes from."""

    address: str
    name: str
    hmac_key: bytes


def format_due(due: datetime | None, zone: ZoneInfo | None = None) -> str:
    """For staff: '2026-12-09 15:30 MSK', in the level's calendar zone when given."""
    if due is None:
        return "-"
    return (due.astimezone(zone) if zone else due).strftime("%Y-%m-%d %H:%M %Z").strip()


def build_mails(
    intents: tuple[MailIntent, ...],
    ticket: TicketState,
    mail: InboundMail,
    templates: Templates,
    rules: RulesConfig,
    sla: SlaConfig,
    sender: Sender,
    now: datetime,
    rules_fired: tuple[str, ...] = (),
    answer_to: str | None = None,
    previous: Mapping[str, str] | None = None,
    attach_limit: int = NOTIFY_ATTACH_BYTES,
    history: Sequence[PublicMessage] = (),
) -> list[tuple[MailIntent, OutgoingMail]]:
    """`answer_to`: the Message-ID of the customer's last mail on the ticket, which a
    staff answer replies to. `previous`: staff address -> the last notification about
    this ticket to them, which the next one refers to (one thread per ticket in their
    client). Customer attachments go with notifications up to `attach_limit` bytes.
    `history`: the ticket's public correspondence, for a resolution mail."""
    level = sla.levels.get(ticket.sla_level)
    calendar = sla.calendar(ticket.sla_level) if level else None
    spec = sla.calendar_spec(ticket.sla_level) if level else None
    attach = sum(len(a.payload) for a in mail.attachments) <= attach_limit
    tid = format_tid(ticket.id)
    listed = [
        a.filename if attach else f"{a.filename} ({len(a.payload)} B: "
        f"maildesk attachment get {tid} {a.filename})"
        for a in mail.attachments
    ]
    context: dict[str, Any] = {
        "tid": tid,
        "subject": ticket.subject,
        "customer_name": ticket.requester_name,
        "customer_email": ticket.requester,
        "due": format_due(ticket.first_response_due, calendar.zone if calendar else None),
        "support_address": sender.address,
        "assignee": ticket.assignee,
        "group": ticket.group,
        "priority": ticket.priority,
        "category": ticket.category,
        "body": _clean(mail.text)[:BODY_EXCERPT_CHARS],
        "author": None,
        "status": ticket.status,
        "linked_tid": None,
        "rules_fired": list(rules_fired),
        "attachments": listed,
    }
    subject = tagged_subject(ticket.id, ticket.subject)
    references = (*mail.references, *([mail.message_id] if mail.message_id else ()))

    def render(template: str, language: str, intent: MailIntent) -> RenderedMail:
        sla_name = level.display(ticket.sla_level, language) if level else ticket.sla_level
        extra: dict[str, Any] = {"sla_name": sla_name, "event": intent.event}
        if template == "confirmation":  # the promise, in the customer's words and zone
            due = ticket.first_response_due
            extra["due"] = promise_text(
                due, calendar.zone, spec.title if spec else {}, language, now
            ) if due is not None and calendar is not None else ""
        if intent.continues is not None:
            extra["linked_tid"] = format_tid(intent.continues)
        if intent.author:
            member = rules.member(intent.author)
            extra["author"] = member.name if member else intent.author
        if intent.reply is not None:
            extra["body"] = intent.reply.text[:BODY_EXCERPT_CHARS]
        elif intent.event == "rating":
            extra["body"] = f"The customer rated the answer on {tid}: {ticket.rating or 'bad'}."
        elif intent.event in ("reply", "reopened"):  # the customer's new text first
            extra["body"] = _clean(strip_reply(mail.text, None).text)[:BODY_EXCERPT_CHARS]
        return templates.render(template, language, {**context, **extra})

    out: list[tuple[MailIntent, OutgoingMail]] = []
    for intent in intents:
        if intent.template == "refused":
            out.append((intent, _refused_notice(intent, ticket, sender, subject, now)))
            continue
        if intent.template == "ask_time":
            assert intent.author
            text = (f"You resolved {tid}. How long did it take? Reply to this mail with a line\n"
                    "like #time 30m or #time 1h15m; it counts in the monthly report.\n")
            out.append((intent, _to_author(intent.author, f"[time spent?] {subject}", text,
                                           ticket, sender, now)))
            continue
        if intent.template == "held":
            out.append((intent, _held_notice(intent, ticket, rules, sender, subject, now)))
            continue
        if intent.template == "update":
            extra = _update_context(intent, ticket, rules, sender, history)
            body = templates.render("update", intent.language, {**context, **extra})
            out.append(
                (intent, _update(intent, body, mail, sender, subject, now, answer_to, ticket.id))
            )
            continue
        if intent.template == "answer":
            member = rules.member(intent.author or "")
            author = member.name if member else "Support"
            out.append((intent, _answer(intent, author, mail, sender, subject, now, answer_to)))
            continue
        if intent.template == "confirmation":
            composed = compose(
                from_addr=sender.address,
                from_name=sender.name,
                to=intent.recipients,
                subject=subject,
                body=render("confirmation", intent.language, intent),
                now=now,
                in_reply_to=mail.message_id,
                references=references,
                automatic=True,
            )
            out.append((intent, composed))
            continue
        files = [(a.filename, a.content_type, a.payload) for a in mail.attachments] if (
            attach and intent.reply is None) else []
        for staff in intent.recipients:  # one mail each: own language, own reply token
            member = rules.member(staff)
            language = member.languages[0] if member and member.languages else "en"
            before = (previous or {}).get(staff)
            composed = compose(
                from_addr=sender.address,
                from_name=sender.name,
                to=(staff,),
                subject=f"[possible spam] {subject}"
                if intent.event == "possible_spam"
                else subject,
                body=render("notification", language, intent),
                now=now,
                in_reply_to=before or mail.message_id,
                references=(*references, *([before] if before else [])),
                reply_to=reply_address(sender.address, ticket.id, staff, sender.hmac_key),
                automatic=True,
                attachments=files,
            )
            out.append((intent, composed))
    return out


@dataclass(frozen=True)
class PublicMessage:
    """One mail of a ticket's public correspondence, as the customer sees it."""

    at: str
    who: str
    text: str


def _update_context(
    intent: MailIntent,
    ticket: TicketState,
    rules: RulesConfig,
    sender: Sender,
    history: Sequence[PublicMessage],
) -> dict[str, Any]:
    person = rules.member(intent.author or ticket.assignee or "")
    rate = {
        f"rating_{what}": rating_address(sender.address, ticket.id, what, sender.hmac_key)
        for what in ("good", "bad")
    }
    return {
        "event": intent.event,
        "assignee_name": person.name if person else (intent.author or ""),
        "body": _clean(intent.reply.text).strip() if intent.reply else "",
        "history": [vars(m) for m in history] if intent.event == "resolved" else [],
        **rate,
    }


def _update(
    intent: MailIntent,
    body: RenderedMail,
    mail: InboundMail,
    sender: Sender,
    subject: str,
    now: datetime,
    answer_to: str | None,
    ticket_id: int,
) -> OutgoingMail:
    """A ticket change told to the customer, threaded to their last mail. With a staff
    answer in it (a resolving answer) it is a person's mail: not automatic, the
    answer's attachments and cc go with it."""
    answered = intent.reply is not None
    why = (
        rating_address(sender.address, ticket_id, "why", sender.hmac_key)
        if intent.event == "rating_ask"
        else None
    )
    files: list[tuple[str, str, bytes]] = []
    if answered:
        files = list(intent.files) if intent.files is not None else [
            (a.filename, a.content_type, a.payload) for a in mail.attachments]
    return compose(
        from_addr=sender.address,
        from_name=sender.name,
        to=intent.recipients,
        cc=intent.cc,
        subject=subject,
        body=body,
        now=now,
        in_reply_to=answer_to,
        references=tuple(r for r in (answer_to,) if r),
        reply_to=why,
        automatic=not answered,
        attachments=files,
    )


def _pre(text: str) -> str:
    return f'<pre style="white-space: pre-wrap">{escape(text)}</pre>'


def _clean(text: str) -> str:
    """Line ends as a mail client shows them: no stray CR from the customer's CRLF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _answer(
    intent: MailIntent,
    author: str,
    mail: InboundMail,
    sender: Sender,
    subject: str,
    now: datetime,
    answer_to: str | None,
) -> OutgoingMail:
    """The staff member's answer as the customer receives it: from the support address
    with the author's name, quotes removed, attachments byte for byte, threaded to the
    customer's last mail, not automatic (no Auto-Submitted: the customer may answer)."""
    assert intent.reply is not None
    text = _clean(intent.reply.text).rstrip() + "\n"
    html = intent.reply.html or _pre(text)
    return compose(
        from_addr=sender.address,
        from_name=f"{author} (Support)",
        to=intent.recipients,
        cc=intent.cc,
        subject=subject,
        body=RenderedMail(text=text, html=html),
        now=now,
        in_reply_to=answer_to,
        references=tuple(r for r in (answer_to,) if r),
        automatic=False,
        attachments=list(intent.files)
        if intent.files is not None
        else [(a.filename, a.content_type, a.payload) for a in mail.attachments],
    )


def _held_notice(
    intent: MailIntent,
    ticket: TicketState,
    rules: RulesConfig,
    sender: Sender,
    subject: str,
    now: datetime,
) -> OutgoingMail:
    """To a staff member whose answer the collision guard held: the other answer, and
    how to send theirs anyway (a reply starting with #send, to this mail's token)."""
    assert intent.collision is not None and intent.reply is not None and intent.author
    other = rules.member(intent.collision.other)
    name = other.name if other else intent.collision.other
    text = "\n".join([
        f"Your answer on {format_tid(ticket.id)} was NOT sent: {name} answered the customer",
        "after the mail you replied to.",
        "",
        f"{name} wrote:",
        "-" * 70,
        _clean(intent.collision.text).strip(),
        "-" * 70,
        "Your answer:",
        "-" * 70,
        _clean(intent.reply.text).strip(),
        "-" * 70,
        "To send yours anyway, reply to this mail with #send as the first line.",
        "Any other reply drops it.",
    ]) + "\n"
    return _to_author(intent.author, f"[held] {subject}", text, ticket, sender, now)


def _refused_notice(
    intent: MailIntent, ticket: TicketState, sender: Sender, subject: str, now: datetime
) -> OutgoingMail:
    """To a staff member whose mail had an invalid command line: which and why."""
    assert intent.author
    text = "\n".join([
        f"Your mail on {format_tid(ticket.id)} was NOT applied and nothing reached the customer:",
        "",
        *(f"  {line}" for line in intent.lines),
        "",
        "Fix the line and send the mail again (reply to this one: it carries your reply token).",
    ]) + "\n"
    return _to_author(intent.author, f"[not applied] {subject}", text, ticket, sender, now)


def _to_author(
    author: str, subject: str, text: str, ticket: TicketState, sender: Sender, now: datetime
) -> OutgoingMail:
    """A plain notice to a staff member, with their reply token so they can answer it."""
    return compose(
        from_addr=sender.address,
        from_name=sender.name,
        to=(author,),
        subject=subject,
        body=RenderedMail(text=text, html=_pre(text)),
        now=now,
        reply_to=reply_address(sender.address, ticket.id, author, sender.hmac_key),
        automatic=True,
    )
