"""What the customer has seen of a ticket, and how many updates they got (storage).

- `public_history`: the public correspondence, oldest first, for a resolution mail:
  the customer's mails and the staff answers as relayed (quotes removed);
- `updates_sent`: update mails to the requester within the hour, for their cap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from maildesk.core.notify import PublicMessage
from maildesk.core.rules import RulesConfig
from maildesk.storage.models import Message, Outbox

HISTORY_LIMIT = 200  # mails; the oldest beyond this are left out of a resolution mail
UPDATE = "update"


def public_history(
    session: Session, ticket_id: int, customer: str, rules: RulesConfig
) -> list[PublicMessage]:
    rows = session.exec(
        select(Message.created_at, Message.kind, Message.from_addr, Message.body_text)
        .where(
            Message.ticket_id == ticket_id,
            Message.visibility == "public",
            or_(  # the customer's mails in, the answers out (not confirmations, notices)
                and_(col(Message.direction) == "in", col(Message.kind) == "customer"),
                and_(col(Message.direction) == "out", col(Message.kind) == "answer"),
            ),
        )
        .order_by(col(Message.id).desc())
        .limit(HISTORY_LIMIT)
    ).all()
    history = []
    for at, kind, sender, text in reversed(rows):
        member = rules.member(sender) if kind == "answer" else None
        who = member.name if member else (customer if kind == "customer" else "Support")
        stamp = at.strftime("%Y-%m-%d %H:%M UTC")
        history.append(PublicMessage(stamp, who, text.replace("\r\n", "\n").strip()))
    return history


def updates_sent(session: Session, ticket_id: int, now: datetime) -> int:
    return int(
        session.exec(
            select(func.count()).where(
                Outbox.ticket_id == ticket_id,
                Outbox.kind == UPDATE,
                col(Outbox.created_at) >= now - timedelta(hours=1),
            )
        ).one()
    )
