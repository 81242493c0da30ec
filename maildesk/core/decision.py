"""The typed results of the pure core: the state a decision needs and the Decision.

Defined apart from the functions that produce them (maildesk.core.decide, maildesk.core.answer)
so that every stage can name them without importing another stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from maildesk.core.classify import Classification
from maildesk.core.identity import Identity
from maildesk.core.quotes import StrippedReply
from maildesk.core.rules import RulesConfig
from maildesk.core.sla import SlaConfig

CLOSED_STATUSES = frozenset({"resolved", "closed"})


@dataclass(frozen=True)
class TicketState:
    id: int
    status: str
    subject: str
    requester: str
    requester_name: str
    participants: frozenset[str]
    assignee: str | None
    group: str | None
    priority: str
    category: str
    sla_level: str
    language: str
    first_response_due: datetime | None
    cc: frozenset[str] = frozenset()  # participants with the cc role
    staff: frozenset[str] = frozenset()  # staff who wrote on the ticket
    updated_at: datetime | None = None
    first_response_at: datetime | None = None
    linked_to: int | None = None
    rating: str | None = None  # good / bad, once the customer rated
    co: frozenset[str] = frozenset()  # co-assignees (#co): told like the assignee
    merged_into: int | None = None  # #merge: the ticket that took this one's mail
    time_spent_minutes: int = 0


@dataclass(frozen=True)
class ThreadMatch:
    """Which existing ticket this mail belongs to, and how we know."""

    ticket: TicketState | None
    via: Literal["token", "tid", "reference", "bounce", "rating", "none"]
    refused: tuple[int, ...] = ()  # tickets the mail pointed at but its sender may not join
    refused_ticket: TicketState | None = None  # the first of those (an auto-reply is noted there)
    bounce_recipients: tuple[str, ...] = ()  # who the mail a delivery report is about went to
    reason: str = ""  # one line: which tag, token or reference, and why the sender may join
    continues: int | None = None  # a closed ticket past its reopen window: a new one follows it
    rating: str | None = None  # via "rating": good, bad, or why (the reason for a bad one)


@dataclass(frozen=True)
class HeldAnswer:
    """A staff answer held by the collision guard, waiting for `#send`."""

    message_id: int  # the stored message
    text: str
    files: tuple[tuple[str, str, bytes], ...]  # (filename, content type, bytes)


@dataclass(frozen=True)
class Collision:
    """Another staff member answered publicly after the mail this reply responds to."""

    other: str  # their address
    text: str  # their answer


@dataclass(frozen=True)
class SenderFacts:
    auto_replies_last_hour: int
    suppressed: bool
    new_tickets_last_hour: int = 0
    latest_ticket: TicketState | None = None  # the sender's newest ticket
    same_body_ticket: TicketState | None = None  # where this sender sent this body within the hour
    alerted: frozenset[str] = frozenset()  # admin alerts about this sender within the hour
    collision: Collision | None = None  # staff answers only
    held: HeldAnswer | None = None  # this staff mail answers a collision notice
    merge_targets: tuple[TicketState, ...] = ()  # tickets a staff mail's #merge names


@dataclass(frozen=True)
class Workload:
    open_counts: Mapping[str, int]
    last_assigned: Mapping[str, str]  # group -> last staff picked (round robin)


SpamBand = Literal["ham", "unsure", "spam"]


NO_SENDER_FACTS = SenderFacts(auto_replies_last_hour=0, suppressed=False)
NO_WORKLOAD = Workload(open_counts={}, last_assigned={})


@dataclass(frozen=True)
class Facts:
    """All `decide` knows of a mail besides its content: what the pure stages found
    (kind, identity, spam band) and what the database said (thread, sender, workload;
    the sender's and the workload only for a mail that may open a ticket)."""

    kind: Classification
    identity: Identity
    thread: ThreadMatch
    sender: SenderFacts = NO_SENDER_FACTS
    workload: Workload = NO_WORKLOAD
    spam: SpamBand = "ham"
UpdateEvent = Literal["assigned", "resolved", "closed", "reopened", "rating_ask"]


@dataclass(frozen=True)
class NewTicket:
    status: Literal["new", "held", "spam"]
    subject: str
    requester: str
    requester_name: str
    cc: tuple[str, ...]
    assignee: str | None
    group: str | None
    priority: str
    category: str
    sla_level: str
    language: str
    first_response_due: datetime
    rules_fired: tuple[str, ...]
    linked_to: int | None = None  # the ticket its mail named but its sender may not join


@dataclass(frozen=True)
class MailIntent:
    """A mail to render and queue once the ticket has its ID."""

    template: Literal[
        "confirmation", "notification", "answer", "held", "refused", "update", "ask_time"
    ]
    recipients: tuple[str, ...]
    language: str
    event: Literal[
        "new", "reply", "reopened", "possible_spam", "answer", "note",
        "assigned", "resolved", "closed", "rating", "rating_ask",
    ]
    cc: tuple[str, ...] = ()  # visible Cc (answers to the customer)
    author: str | None = None  # the staff member who wrote it (answers, notes)
    reply: StrippedReply | None = None  # the staff text to relay, quotes removed
    files: tuple[tuple[str, str, bytes], ...] | None = None  # None: the mail's attachments
    collision: Collision | None = None  # for a "held" notice: the other answer
    lines: tuple[str, ...] = ()  # for a "refused" notice: which command lines and why
    continues: int | None = None  # a confirmation: the closed ticket this one continues


@dataclass(frozen=True)
class Alert:
    """A warning to the admins, at most one per kind and address an hour."""

    kind: Literal["spoof", "storm", "refused"]
    address: str
    subject: str
    lines: tuple[str, ...]
    to: tuple[str, ...] = ()  # instead of the admins (a refused #new-for: its author)


@dataclass(frozen=True)
class Decision:
    # refused: a staff mail that opens nothing (an invalid #new-for); its author is told
    action: Literal["new_ticket", "append", "note", "orphan_bounce", "refused"]
    message_kind: Literal["customer", "staff", "auto_reply", "bounce"]
    ticket: TicketState | None = None  # the existing ticket (append)
    new_ticket: NewTicket | None = None
    reopen: bool = False
    add_cc: tuple[str, ...] = ()
    mails: tuple[MailIntent, ...] = ()
    suppress: tuple[str, ...] = ()  # hard-bounced addresses: no automatic mail for a while
    events: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (kind, detail)
    alerts: tuple[Alert, ...] = ()
    status: str | None = None  # the ticket's new status, when it changes
    first_response: bool = False  # this mail is the ticket's first public staff answer
    visibility: Literal["public", "internal"] | None = None  # of the stored message
    held_done: int | None = None  # a held answer (message id) sent or dropped now
    # Ticket fields a staff command sets: assignee, assigned_group, priority, category,
    # sla_level, pending_until (ISO time) and time_spent (minutes to add).
    changes: tuple[tuple[str, str], ...] = ()
    # #spam / #ham: the staff decision the filter learns (maildesk.work.quarantine.mark_ticket).
    mark: Literal["spam", "ham"] | None = None


@dataclass(frozen=True)
class Policy:
    """The parts of configuration the core needs, passed in (no globals)."""

    rules: RulesConfig
    sla: SlaConfig
    own_addresses: frozenset[str]
    default_language: str
    auto_reply_limit_per_hour: int
    new_tickets_per_sender_per_hour: int = 20
    reopen_days: float = 14.0  # a customer reply reopens a resolved/closed ticket this long
    # Canned answers for #canned: name -> language -> text (rendered when used).
    canned: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
