"""What the customer is told when staff change a ticket. Pure.

A staff `#assign`, `#resolve`, `#close` or `#reopen` (by mail or `maildesk do`)
mails the requester, each kind as rules.yaml's `customer_updates` allows:
- assigned: who is handling the request now;
- resolved: the answer that resolved it (when the staff mail had one), the whole
  public correspondence below it, and a rating request (two mailto links);
- closed, reopened: one short line each.
A resolving answer goes out as the resolution mail itself: one mail, not two.
"""

from __future__ import annotations

from dataclasses import replace

from maildesk.core.decision import CLOSED_STATUSES, MailIntent, TicketState, UpdateEvent

STATUS_EVENTS: dict[str, UpdateEvent] = {"resolved": "resolved", "closed": "closed"}


def customer_updates(
    ticket: TicketState,
    status: str | None,
    changes: tuple[tuple[str, str], ...],
    enabled: frozenset[str],
) -> tuple[MailIntent, ...]:
    """The update mails a change of status or assignee sends the requester."""
    if not ticket.requester:
        return ()
    intents: list[MailIntent] = []
    assignee = dict(changes).get("assignee")
    if (
        assignee
        and assignee != ticket.assignee
        and "assigned" in enabled
        and status not in CLOSED_STATUSES
    ):
        intents.append(_update(ticket, "assigned", assignee))
    merged = "merged_into" in dict(changes)  # its people are cc on the survivor now
    if status is not None and status != ticket.status and not merged:
        event: UpdateEvent | None = STATUS_EVENTS.get(status)
        if status == "open" and ticket.status in CLOSED_STATUSES:
            event = "reopened"
        if event is not None and event in enabled:
            intents.append(_update(ticket, event, None))
    return tuple(intents)


def resolve_with_answer(
    mails: tuple[MailIntent, ...], updates: tuple[MailIntent, ...]
) -> tuple[MailIntent, ...]:
    """The staff answer in a resolving mail becomes the resolution mail's text."""
    answer = next((m for m in mails if m.template == "answer"), None)
    resolved = next((u for u in updates if u.event == "resolved"), None)
    if answer is None or resolved is None:
        return (*mails, *updates)
    merged = replace(
        resolved, cc=answer.cc, author=answer.author, reply=answer.reply, files=answer.files
    )
    return (
        *(m for m in mails if m is not answer),
        *(merged if u is resolved else u for u in updates),
    )


def _update(ticket: TicketState, event: UpdateEvent, author: str | None) -> MailIntent:
    return MailIntent("update", (ticket.requester,), ticket.language, event, author=author)
