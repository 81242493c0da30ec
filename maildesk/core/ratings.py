"""The customer rates the answer that resolved their ticket. Pure.

The resolution mail carries two mailto links (`support+rate.<token>.good@…` and
`.bad@…`, HMAC tokens: maildesk.core.replytoken). A mail to one records the rating (the
latest counts) and never reopens the ticket. A bad rating asks the customer why, once,
in a mail whose Reply-To is the `.why` address; the assignee is told of the rating
and of the reason when it comes.
"""

from __future__ import annotations

from maildesk.core.classify import Classification
from maildesk.core.decision import Decision, MailIntent, TicketState
from maildesk.core.parse import InboundMail
from maildesk.core.quotes import strip_reply

REASON_CHARS = 2000


def decide_rating(
    mail: InboundMail, kind: Classification, ticket: TicketState, what: str
) -> Decision:
    sender = mail.from_addr or "(no sender)"
    if kind.kind == "auto_reply":
        return Decision(action="append", message_kind="auto_reply", ticket=ticket,
                        visibility="internal",
                        events=(("rating", f"automatic mail from {sender} to the rating "
                                 "address: ignored"),))
    staff = tuple(dict.fromkeys(a for a in (ticket.assignee, *sorted(ticket.co)) if a))
    if what == "why":
        reason = strip_reply(mail.text, None).text.strip()[:REASON_CHARS]
        told = (MailIntent("notification", staff, "en", "rating", reply=strip_reply(reason, None)),
                ) if staff and reason else ()
        return Decision(action="append", message_kind="customer", ticket=ticket,
                        visibility="internal", mails=told,
                        changes=(("rating_comment", reason),) if reason else (),
                        events=(("rating", f"reason for the rating from {sender}"),))
    mails: list[MailIntent] = []
    if what == "bad" and ticket.rating != "bad":
        mails.append(MailIntent("update", (ticket.requester,), ticket.language, "rating_ask"))
        if staff:
            mails.append(MailIntent("notification", staff, "en", "rating"))
    return Decision(
        action="append",
        message_kind="customer",
        ticket=ticket,
        visibility="internal",
        mails=tuple(m for m in mails if m.recipients and all(m.recipients)),
        changes=(("rating", what),),
        events=(("rating", f"{what} from {sender}"
                 + (f" (was {ticket.rating})" if ticket.rating else "")),),
    )
