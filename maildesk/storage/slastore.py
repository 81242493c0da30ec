"""The SLA clocks on the ticket row (storage side of maildesk.core.slaclock).

`start_clocks` for a new ticket, `advance_clocks` after a mail or command changed one;
both store the due and warning times and `sla_next_at`, the time the scan must look at
the ticket next (indexed: the scan is a range query, never a loop over tickets).
"""

from __future__ import annotations

from datetime import datetime

from maildesk.core import slaclock
from maildesk.core.businesstime import Calendar
from maildesk.core.sla import Level, SlaConfig
from maildesk.core.slaclock import Clocks
from maildesk.storage.models import Ticket

# What write_clocks sets on a ticket row.
CLOCK_COLUMNS = (
    "first_response_due", "first_response_warn", "next_response_due", "next_response_warn",
    "resolution_due", "resolution_warn", "sla_paused_at", "sla_next_at",
)


def level_of(sla: SlaConfig, ticket: Ticket) -> tuple[Level, Calendar]:
    """The ticket's level and calendar (the default level if its level was removed)."""
    name = ticket.sla_level if ticket.sla_level in sla.levels else sla.default_level
    return sla.levels[name], sla.calendar(name)


def clocks_of(ticket: Ticket) -> Clocks:
    return Clocks(
        first_response_due=ticket.first_response_due,
        first_response_warn=ticket.first_response_warn,
        next_response_due=ticket.next_response_due,
        next_response_warn=ticket.next_response_warn,
        resolution_due=ticket.resolution_due,
        resolution_warn=ticket.resolution_warn,
        paused_at=ticket.sla_paused_at,
    )


def write_clocks(ticket: Ticket, clocks: Clocks, sla: SlaConfig) -> None:
    ticket.first_response_due = clocks.first_response_due
    ticket.first_response_warn = clocks.first_response_warn
    ticket.next_response_due = clocks.next_response_due
    ticket.next_response_warn = clocks.next_response_warn
    ticket.resolution_due = clocks.resolution_due
    ticket.resolution_warn = clocks.resolution_warn
    ticket.sla_paused_at = clocks.paused_at
    level, calendar = level_of(sla, ticket)
    steps = slaclock.plan(clocks, level, calendar, ticket.status,
                          ticket.first_response_at is not None)
    ticket.sla_next_at = slaclock.next_at(steps)  # a step already sent is skipped by its key


def start_clocks(ticket: Ticket, sla: SlaConfig, now: datetime) -> None:
    level, calendar = level_of(sla, ticket)
    clocks = slaclock.start(level, calendar, ticket.created_at or now)
    write_clocks(ticket, slaclock.status_changed(clocks, level, calendar, ticket.status, now),
                 sla)


def advance_clocks(
    ticket: Ticket,
    sla: SlaConfig,
    now: datetime,
    *,
    old_level: str,
    customer_reply: bool,
    staff_answer: bool,
    answered_before: bool,
) -> str | None:
    """After a mail or command changed the ticket; returns an event line when the level
    changed and the due times were computed anew."""
    level, calendar = level_of(sla, ticket)
    clocks = clocks_of(ticket)
    changed = None
    if ticket.sla_level != old_level:
        clocks = slaclock.relevel(level, calendar, ticket.created_at, ticket.last_customer_at,
                                  answered_before, clocks.paused_at)
        changed = f"due times computed anew for level {ticket.sla_level}"
    clocks = slaclock.status_changed(clocks, level, calendar, ticket.status, now)
    if customer_reply:
        ticket.last_customer_at = now
        clocks = slaclock.customer_replied(clocks, level, calendar, answered_before, now)
    if staff_answer:
        clocks = slaclock.staff_answered(clocks)
    write_clocks(ticket, clocks, sla)
    return changed
