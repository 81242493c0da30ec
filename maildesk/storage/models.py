"""Database tables (SQLModel). Schema changes go through Alembic migrations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware (SQLite too)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AddressList(TypeDecorator[list[str]]):
    """A list of addresses, stored as a JSON array: never joined and split again, so an
    address can never turn into two (a quoted local part with a comma stays one)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Any) -> str | None:
        return None if value is None else json.dumps(list(value))

    def process_result_value(self, value: str | None, dialect: Any) -> list[str] | None:
        return None if value is None else [str(a) for a in json.loads(value)]


def _ts(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class Inbound(SQLModel, table=True):
    """Every accepted mail, raw and byte for byte: the durable spool and the raw store.

    status: new (waiting for the pipeline), done, duplicate, failed (kept for a human).
    spool_key: the record in the spool file it was replayed from (unique: a replay
    repeated after a crash stores nothing twice).
    """

    __table_args__ = (Index("ux_inbound_spool_key", "spool_key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    source: str = Field(max_length=200)
    envelope_from: str | None = Field(default=None, max_length=500)
    envelope_to: str = Field(default="", sa_column=Column(Text, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int
    status: str = Field(default="new", max_length=20, index=True)
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    dedupe_key: str | None = Field(default=None, max_length=600)
    ticket_id: int | None = Field(default=None, index=True)
    processed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    spool_key: str | None = Field(default=None, max_length=64)


class Ticket(SQLModel, table=True):
    __table_args__ = (
        # a sender's tickets of the last hour (storm guard); a member's open tickets
        # (least_open), counted from the index alone
        Index("ix_ticket_requester_created", "requester", "created_at"),
        Index("ix_ticket_assignee_status", "assignee", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="new", max_length=20, index=True)
    priority: str = Field(default="normal", max_length=20)
    category: str = Field(default="general", max_length=100)
    requester: str = Field(max_length=500)
    requester_name: str = Field(default="", max_length=500)
    assignee: str | None = Field(default=None, max_length=500)
    assigned_group: str | None = Field(default=None, max_length=100)
    sla_level: str = Field(default="standard", max_length=100)
    language: str = Field(default="en", max_length=10)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    first_response_due: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    first_response_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    pending_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    time_spent_minutes: int = 0
    # Opened for someone who replied into another ticket they may not join: that ticket.
    linked_to: int | None = Field(default=None, index=True)
    # #merge: this ticket was merged into that one; later mail to it lands there.
    merged_into: int | None = Field(default=None, index=True)
    rating: str | None = Field(default=None, max_length=10)  # good / bad
    rating_comment: str | None = Field(default=None, sa_column=Column(Text))
    rated_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # SLA clocks (maildesk.core.slaclock): due and warning times of each target that runs,
    # when the clocks were paused (answered, pending), and when the scan must look next.
    first_response_warn: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_response_due: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_response_warn: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    resolution_due: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    resolution_warn: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    sla_paused_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    sla_next_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True, index=True))
    last_customer_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Message(SQLModel, table=True):
    """One mail on a ticket, in or out. dedupe_key is unique for inbound mail (invariant 2)."""

    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_message_dedupe_key"),
        Index("ix_message_sender_body", "from_addr", "body_hash", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id")
    direction: str = Field(max_length=3)  # in / out
    kind: str = Field(max_length=20)  # customer, staff, auto_reply, bounce, confirmation
    visibility: str = Field(default="public", max_length=10)  # public / internal
    dedupe_key: str | None = Field(default=None, max_length=600)
    message_id: str | None = Field(default=None, max_length=500, index=True)
    from_addr: str = Field(default="", max_length=500)
    to_addrs: str = Field(default="", sa_column=Column(Text, nullable=False))
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    body_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    body_html: str | None = Field(default=None, sa_column=Column(Text))
    defects: str = Field(default="", sa_column=Column(Text, nullable=False))
    spam_probability: float | None = None  # None: not scored (cold start, staff token)
    spam_band: str | None = Field(default=None, max_length=10)
    spam_model: str | None = Field(default=None, max_length=100)
    # Who the sender was taken to be (maildesk.core.identity): staff or customer, and why.
    identity: str | None = Field(default=None, max_length=20)
    identity_reason: str | None = Field(default=None, sa_column=Column(Text))
    body_hash: str | None = Field(default=None, max_length=64)  # same sender, same body: storms
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Attachment(SQLModel, table=True):
    """Metadata; the bytes live content-addressed under data/attachments/<sha[:2]>/<sha>."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    size: int
    sha256: str = Field(max_length=64)


class Participant(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("ticket_id", "address", name="uq_participant"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    address: str = Field(max_length=500)
    name: str = Field(default="", max_length=500)
    role: str = Field(max_length=20)  # requester, cc, co (co-assignee, staff)


class Event(SQLModel, table=True):
    """The audit log: who changed what on a ticket, when, and why."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    actor: str = Field(max_length=500)
    kind: str = Field(max_length=40)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))


class Outbox(SQLModel, table=True):
    """Outbound mail, written in the same transaction as the ticket change (invariant 3)."""

    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # per recipient and kind within the hour: the auto-reply and notification caps
        Index("ix_outbox_rcpt_kind", "rcpt", "kind", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    kind: str = Field(max_length=30)  # confirmation, notification, ...
    automatic: bool = True  # an automatic reply (counts against the per-sender cap)
    mail_from: str = Field(max_length=500)
    recipients: list[str] = Field(sa_column=Column(AddressList(), nullable=False))
    rcpt: str = Field(default="", max_length=500)  # the first recipient: per-recipient caps
    message_id: str = Field(max_length=500, unique=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="queued", max_length=10)  # queued, sent, failed
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Suppression(SQLModel, table=True):
    """No automatic mail to this address until `until` (after a hard bounce)."""

    address: str = Field(primary_key=True, max_length=500)
    until: datetime = Field(sa_column=_ts())
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))


class KV(SQLModel, table=True):
    """Small state: IMAP UIDs, round-robin pointers."""

    key: str = Field(primary_key=True, max_length=300)
    value: str = Field(sa_column=Column(Text, nullable=False))


class SlaStep(SQLModel, table=True):
    """A warning, breach or escalation mail about one deadline of one ticket: sent once
    (the unique constraint is the claim, across restarts and daemons)."""

    __tablename__ = "sla_step"
    __table_args__ = (UniqueConstraint("ticket_id", "step", name="uq_sla_step"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    step: str = Field(max_length=200)  # target:due:kind, e.g. first_response:20261207T1130Z:warn
    target: str = Field(max_length=20)  # first_response, next_response, resolution
    kind: str = Field(max_length=20)  # warn, breach, escalation1, ...
    due: datetime = Field(sa_column=_ts())
    fired_at: datetime = Field(sa_column=_ts(index=True))
    recipients: str = Field(default="", sa_column=Column(Text, nullable=False))
