"""Turn a Decision's mail intents into composed outbound mails (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from maildesk.compose import OutgoingMail, compose
from maildesk.parse import InboundMail
from maildesk.pipeline import MailIntent, TicketState
from maildesk.render import RenderedMail, Templates
from maildesk.replytoken import reply_address
from maildesk.rules import RulesConfig
from maildesk.sla import SlaConfig
from maildesk.tid import format_tid, tagged_subject

BODY_EXCERPT_CHARS = 20_000


@dataclass(frozen=True)
class Sender:
    """Who our mail comes from."""

    address: str
    name: str
    hmac_key: bytes


def format_due(due: datetime | None) -> str:
    return due.strftime("%Y-%m-%d %H:%M %Z").strip() if due else "-"


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
) -> list[tuple[MailIntent, OutgoingMail]]:
    level = sla.levels.get(ticket.sla_level)
    context: dict[str, Any] = {
        "tid": format_tid(ticket.id),
        "subject": ticket.subject,
        "customer_name": ticket.requester_name,
        "customer_email": ticket.requester,
        "due": format_due(ticket.first_response_due),
        "support_address": sender.address,
        "assignee": ticket.assignee,
        "group": ticket.group,
        "priority": ticket.priority,
        "category": ticket.category,
        "body": mail.text[:BODY_EXCERPT_CHARS],
        "rules_fired": list(rules_fired),
        "attachments": [a.filename for a in mail.attachments],
    }
    subject = tagged_subject(ticket.id, ticket.subject)
    references = (*mail.references, *([mail.message_id] if mail.message_id else ()))

    def render(template: str, language: str, event: str) -> RenderedMail:
        sla_name = level.display(ticket.sla_level, language) if level else ticket.sla_level
        return templates.render(
            template, language, {**context, "sla_name": sla_name, "event": event}
        )

    out: list[tuple[MailIntent, OutgoingMail]] = []
    for intent in intents:
        if intent.template == "confirmation":
            language = intent.language
            body = render("confirmation", language, intent.event)
            composed = compose(
                from_addr=sender.address,
                from_name=sender.name,
                to=intent.recipients,
                subject=subject,
                body=body,
                now=now,
                in_reply_to=mail.message_id,
                references=references,
                automatic=True,
            )
            out.append((intent, composed))
            continue
        for staff in intent.recipients:  # one mail each: own language, own reply token
            member = rules.member(staff)
            language = member.languages[0] if member and member.languages else "en"
            body = render("notification", language, intent.event)
            composed = compose(
                from_addr=sender.address,
                from_name=sender.name,
                to=(staff,),
                subject=f"[possible spam] {subject}"
                if intent.event == "possible_spam"
                else subject,
                body=body,
                now=now,
                in_reply_to=mail.message_id,
                references=references,
                reply_to=reply_address(sender.address, ticket.id, staff, sender.hmac_key),
                automatic=True,
            )
            out.append((intent, composed))
    return out
