"""Turn a Decision's mail intents into composed outbound mails (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from maildesk.core.businesstime import Calendar
from maildesk.core.compose import OutgoingMail, compose
from maildesk.core.decide import MailIntent, TicketState
from maildesk.core.parse import InboundMail
from maildesk.core.promise import promise_text
from maildesk.core.quotes import strip_reply
from maildesk.core.render import RenderedMail, Templates
from maildesk.core.replytoken import rating_address, reply_address
from maildesk.core.rules import RulesConfig
from maildesk.core.sla import CalendarSpec, Level, SlaConfig
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
    batch = _Batch(
        ticket=ticket, mail=mail, templates=templates, rules=rules, sender=sender, now=now,
        answer_to=answer_to, previous=previous or {}, history=history,
        level=level, calendar=calendar, spec=spec, attach=attach,
        context=_template_context(ticket, mail, sender, calendar, rules_fired, attach),
        subject=tagged_subject(ticket.id, ticket.subject),
        references=(*mail.references, *([mail.message_id] if mail.message_id else ())),
    )
    out: list[tuple[MailIntent, OutgoingMail]] = []
    for intent in intents:
        build_one = _ONE_MAIL.get(intent.template)
        if build_one is not None:
            out.append((intent, build_one(intent, batch)))
        else:  # a notification: one mail per staff recipient
            out.extend((intent, composed) for composed in _notifications(intent, batch))
    return out


@dataclass(frozen=True)
class PublicMessage:
    """One mail of a ticket's public correspondence, as the customer sees it."""

    at: str
    who: str
    text: str


@dataclass(frozen=True)
class _Batch:
    """What every mail of one build_mails call shares: its arguments and what is worked
    out from them once (the SLA level and calendar, the template context, the subject)."""

    ticket: TicketState
    mail: InboundMail
    templates: Templates
    rules: RulesConfig
    sender: Sender
    now: datetime
    answer_to: str | None
    previous: Mapping[str, str]
    history: Sequence[PublicMessage]
    level: Level | None
    calendar: Calendar | None
    spec: CalendarSpec | None
    attach: bool  # the customer's attachments are small enough to go with notifications
    context: dict[str, Any]  # for the templates; each mail adds its own keys
    subject: str
    references: tuple[str, ...]


def _template_context(
    ticket: TicketState,
    mail: InboundMail,
    sender: Sender,
    calendar: Calendar | None,
    rules_fired: tuple[str, ...],
    attach: bool,
) -> dict[str, Any]:
    """What the templates are given about the ticket and the mail, whatever the mail."""
    tid = format_tid(ticket.id)
    listed = [
        a.filename if attach else f"{a.filename} ({len(a.payload)} B: "
        f"maildesk attachment get {tid} {a.filename})"
        for a in mail.attachments
    ]
    return {
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


def _render(batch: _Batch, template: str, language: str, intent: MailIntent) -> RenderedMail:
    """A confirmation or a staff notification: the shared context with what this
    intent and language change in it."""
    ticket, level, calendar, spec = batch.ticket, batch.level, batch.calendar, batch.spec
    tid = format_tid(ticket.id)
    sla_name = level.display(ticket.sla_level, language) if level else ticket.sla_level
    extra: dict[str, Any] = {"sla_name": sla_name, "event": intent.event}
    if template == "confirmation":  # the promise, in the customer's words and zone
        due = ticket.first_response_due
        extra["due"] = promise_text(
            due, calendar.zone, spec.title if spec else {}, language, batch.now
        ) if due is not None and calendar is not None else ""
    if intent.continues is not None:
        extra["linked_tid"] = format_tid(intent.continues)
    if intent.author:
        member = batch.rules.member(intent.author)
        extra["author"] = member.name if member else intent.author
    if intent.reply is not None:
        extra["body"] = intent.reply.text[:BODY_EXCERPT_CHARS]
    elif intent.event == "rating":
        extra["body"] = f"The customer rated the answer on {tid}: {ticket.rating or 'bad'}."
    elif intent.event in ("reply", "reopened"):  # the customer's new text first
        extra["body"] = _clean(strip_reply(batch.mail.text, None).text)[:BODY_EXCERPT_CHARS]
    return batch.templates.render(template, language, {**batch.context, **extra})


def _confirmation(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """To the customer: we have your mail, the ticket ID and when to expect an answer."""
    return compose(
        from_addr=batch.sender.address,
        from_name=batch.sender.name,
        to=intent.recipients,
        subject=batch.subject,
        body=_render(batch, "confirmation", intent.language, intent),
        now=batch.now,
        in_reply_to=batch.mail.message_id,
        references=batch.references,
        automatic=True,
    )


def _notifications(intent: MailIntent, batch: _Batch) -> list[OutgoingMail]:
    """To staff, one mail each: own language, own reply token, threaded to the last
    notification they had about the ticket. The customer's files go with it when they
    are small enough, unless the notification relays a staff reply."""
    mail, sender, ticket = batch.mail, batch.sender, batch.ticket
    files = [(a.filename, a.content_type, a.payload) for a in mail.attachments] if (
        batch.attach and intent.reply is None) else []
    out: list[OutgoingMail] = []
    for staff in intent.recipients:
        member = batch.rules.member(staff)
        language = member.languages[0] if member and member.languages else "en"
        before = batch.previous.get(staff)
        out.append(compose(
            from_addr=sender.address,
            from_name=sender.name,
            to=(staff,),
            subject=f"[possible spam] {batch.subject}"
            if intent.event == "possible_spam"
            else batch.subject,
            body=_render(batch, "notification", language, intent),
            now=batch.now,
            in_reply_to=before or mail.message_id,
            references=(*batch.references, *([before] if before else [])),
            reply_to=reply_address(sender.address, ticket.id, staff, sender.hmac_key),
            automatic=True,
            attachments=files,
        ))
    return out


def _time_question(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """To the staff member who resolved the ticket: how long did it take (#time)."""
    assert intent.author
    tid = format_tid(batch.ticket.id)
    text = (f"You resolved {tid}. How long did it take? Reply to this mail with a line\n"
            "like #time 30m or #time 1h15m; it counts in the monthly report.\n")
    return _to_author(intent.author, f"[time spent?] {batch.subject}", text, batch)


def _update_context(intent: MailIntent, batch: _Batch) -> dict[str, Any]:
    ticket, sender = batch.ticket, batch.sender
    person = batch.rules.member(intent.author or ticket.assignee or "")
    rate = {
        f"rating_{what}": rating_address(sender.address, ticket.id, what, sender.hmac_key)
        for what in ("good", "bad")
    }
    return {
        "event": intent.event,
        "assignee_name": person.name if person else (intent.author or ""),
        "body": _clean(intent.reply.text).strip() if intent.reply else "",
        "history": [vars(m) for m in batch.history] if intent.event == "resolved" else [],
        **rate,
    }


def _update(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """A ticket change told to the customer, threaded to their last mail. With a staff
    answer in it (a resolving answer) it is a person's mail: not automatic, the
    answer's attachments and cc go with it."""
    extra = _update_context(intent, batch)
    body = batch.templates.render("update", intent.language, {**batch.context, **extra})
    mail, sender, answer_to = batch.mail, batch.sender, batch.answer_to
    answered = intent.reply is not None
    why = (
        rating_address(sender.address, batch.ticket.id, "why", sender.hmac_key)
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
        subject=batch.subject,
        body=body,
        now=batch.now,
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


def _answer(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """The staff member's answer as the customer receives it: from the support address
    with the author's name, quotes removed, attachments byte for byte, threaded to the
    customer's last mail, not automatic (no Auto-Submitted: the customer may answer)."""
    member = batch.rules.member(intent.author or "")
    author = member.name if member else "Support"
    answer_to = batch.answer_to
    assert intent.reply is not None
    text = _clean(intent.reply.text).rstrip() + "\n"
    html = intent.reply.html or _pre(text)
    return compose(
        from_addr=batch.sender.address,
        from_name=f"{author} (Support)",
        to=intent.recipients,
        cc=intent.cc,
        subject=batch.subject,
        body=RenderedMail(text=text, html=html),
        now=batch.now,
        in_reply_to=answer_to,
        references=tuple(r for r in (answer_to,) if r),
        automatic=False,
        attachments=list(intent.files)
        if intent.files is not None
        else [(a.filename, a.content_type, a.payload) for a in batch.mail.attachments],
    )


def _held_notice(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """To a staff member whose answer the collision guard held: the other answer, and
    how to send theirs anyway (a reply starting with #send, to this mail's token)."""
    assert intent.collision is not None and intent.reply is not None and intent.author
    other = batch.rules.member(intent.collision.other)
    name = other.name if other else intent.collision.other
    text = "\n".join([
        f"Your answer on {format_tid(batch.ticket.id)} was NOT sent: {name} answered the customer",
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
    return _to_author(intent.author, f"[held] {batch.subject}", text, batch)


def _refused_notice(intent: MailIntent, batch: _Batch) -> OutgoingMail:
    """To a staff member whose mail had an invalid command line: which and why."""
    assert intent.author
    tid = format_tid(batch.ticket.id)
    text = "\n".join([
        f"Your mail on {tid} was NOT applied and nothing reached the customer:",
        "",
        *(f"  {line}" for line in intent.lines),
        "",
        "Fix the line and send the mail again (reply to this one: it carries your reply token).",
    ]) + "\n"
    return _to_author(intent.author, f"[not applied] {batch.subject}", text, batch)


def _to_author(author: str, subject: str, text: str, batch: _Batch) -> OutgoingMail:
    """A plain notice to a staff member, with their reply token so they can answer it."""
    sender = batch.sender
    return compose(
        from_addr=sender.address,
        from_name=sender.name,
        to=(author,),
        subject=subject,
        body=RenderedMail(text=text, html=_pre(text)),
        now=batch.now,
        reply_to=reply_address(sender.address, batch.ticket.id, author, sender.hmac_key),
        automatic=True,
    )


# The mail kinds that make one mail each; a notification makes one per staff recipient.
_ONE_MAIL: dict[str, Callable[[MailIntent, _Batch], OutgoingMail]] = {
    "refused": _refused_notice,
    "ask_time": _time_question,
    "held": _held_notice,
    "update": _update,
    "answer": _answer,
    "confirmation": _confirmation,
}
