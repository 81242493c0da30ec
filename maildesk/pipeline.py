"""The pure core: one parsed mail plus the state it needs -> a Decision.

Nothing here touches the database, the network or the clock; the IO shell
(maildesk.processor) gathers the facts, calls `decide`, and applies the result
in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from maildesk.classify import Classification
from maildesk.language import detect_language
from maildesk.parse import InboundMail
from maildesk.rules import RulesConfig, evaluate, pick_assignee
from maildesk.sla import SlaConfig
from maildesk.tid import clean_subject

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


@dataclass(frozen=True)
class ThreadMatch:
    """Which existing ticket this mail belongs to, and how we know."""

    ticket: TicketState | None
    via: Literal["tid", "reference", "bounce", "none"]
    refused: tuple[int, ...] = ()  # tickets the mail pointed at but its sender may not join


@dataclass(frozen=True)
class SenderFacts:
    auto_replies_last_hour: int
    suppressed: bool


@dataclass(frozen=True)
class Workload:
    open_counts: Mapping[str, int]
    last_assigned: Mapping[str, str]  # group -> last staff picked (round robin)


SpamBand = Literal["ham", "unsure", "spam"]


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


@dataclass(frozen=True)
class MailIntent:
    """A mail to render and queue once the ticket has its ID."""

    template: Literal["confirmation", "notification"]
    recipients: tuple[str, ...]
    language: str
    event: Literal["new", "reply", "reopened", "possible_spam"]


@dataclass(frozen=True)
class Decision:
    action: Literal["new_ticket", "append", "orphan_bounce"]
    message_kind: Literal["customer", "staff", "auto_reply", "bounce"]
    ticket: TicketState | None = None  # the existing ticket (append)
    new_ticket: NewTicket | None = None
    reopen: bool = False
    add_cc: tuple[str, ...] = ()
    mails: tuple[MailIntent, ...] = ()
    suppress: tuple[str, ...] = ()  # hard-bounced addresses: no automatic mail for a while
    events: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (kind, detail)


@dataclass(frozen=True)
class Policy:
    """The parts of configuration the core needs, passed in (no globals)."""

    rules: RulesConfig
    sla: SlaConfig
    own_addresses: frozenset[str]
    default_language: str
    auto_reply_limit_per_hour: int


def may_join(ticket: TicketState, sender: str, rules: RulesConfig) -> bool:
    """A TID or reference is not a key: only participants and staff join (invariant 5)."""
    return sender in ticket.participants or rules.member(sender) is not None


def decide(
    mail: InboundMail,
    kind: Classification,
    thread: ThreadMatch,
    sender: SenderFacts,
    workload: Workload,
    policy: Policy,
    now: datetime,
    spam: SpamBand = "ham",
) -> Decision:
    """Spam only matters for new tickets: a participant's reply is never quarantined."""
    if kind.kind == "bounce":
        return _bounce(mail, thread)
    if thread.ticket is not None:
        return _append(mail, kind, thread.ticket, policy)
    return _new_ticket(mail, kind, thread, sender, workload, policy, now, spam)


def _bounce(mail: InboundMail, thread: ThreadMatch) -> Decision:
    report = mail.report
    suppress = report.failed_recipients if report and report.permanent else ()
    events = (("bounce", f"hard bounce for {', '.join(suppress)}"),) if suppress else ()
    if thread.ticket is None:
        return Decision(action="orphan_bounce", message_kind="bounce", suppress=suppress)
    return Decision(
        action="append",
        message_kind="bounce",
        ticket=thread.ticket,
        suppress=suppress,
        events=events or (("bounce", "delivery report"),),
    )


def _append(
    mail: InboundMail, kind: Classification, ticket: TicketState, policy: Policy
) -> Decision:
    if kind.kind == "auto_reply":
        # An out-of-office never reopens, closes or notifies anything.
        return Decision(
            action="append",
            message_kind="auto_reply",
            ticket=ticket,
            events=(("auto_reply", "; ".join(kind.reasons)),),
        )
    if policy.rules.member(mail.from_addr) is not None:
        return Decision(action="append", message_kind="staff", ticket=ticket)
    reopen = ticket.status in CLOSED_STATUSES
    add_cc = _new_ccs(mail, ticket.participants, policy.own_addresses)
    notify = _staff_to_notify(ticket.assignee, (), policy.rules, exclude=mail.from_addr)
    events: list[tuple[str, str]] = []
    if reopen:
        events.append(("status", f"{ticket.status} -> open (customer replied)"))
    if add_cc:
        events.append(("cc", f"added {', '.join(add_cc)}"))
    mails = (
        (MailIntent("notification", notify, "en", "reopened" if reopen else "reply"),)
        if notify
        else ()
    )
    return Decision(
        action="append",
        message_kind="customer",
        ticket=ticket,
        reopen=reopen,
        add_cc=add_cc,
        mails=mails,
        events=tuple(events),
    )


def _new_ticket(
    mail: InboundMail,
    kind: Classification,
    thread: ThreadMatch,
    sender: SenderFacts,
    workload: Workload,
    policy: Policy,
    now: datetime,
    spam: SpamBand,
) -> Decision:
    result = evaluate(policy.rules, mail)
    assignee = result.assignee
    if assignee is None and result.group is not None:
        assignee = pick_assignee(
            policy.rules,
            result.group,
            workload.open_counts,
            workload.last_assigned.get(result.group),
        )
    level = policy.sla.level_for(mail, result.sla)
    language = detect_language(f"{mail.subject}\n{mail.text}", policy.default_language)
    ticket = NewTicket(
        status="spam" if spam == "spam" else "held" if spam == "unsure" else "new",
        subject=clean_subject(mail.subject) or "(no subject)",
        requester=mail.from_addr,
        requester_name=mail.from_name,
        cc=_new_ccs(mail, frozenset({mail.from_addr}), policy.own_addresses),
        assignee=assignee,
        group=result.group,
        priority=result.priority,
        category=result.category,
        sla_level=level,
        language=language,
        first_response_due=policy.sla.first_response_due(level, now),
        rules_fired=result.fired,
    )
    events = [("created", f"from {mail.from_addr or '(no sender)'}")]
    if result.fired:
        events.append(("rules", "fired: " + ", ".join(result.fired)))
    if assignee:
        events.append(
            ("assignee", f"-> {assignee}" + (f" (group {result.group})" if result.group else ""))
        )
    for refused in thread.refused:
        events.append(("thread", f"mail named ticket {refused} but its sender is not on it"))

    mails: list[MailIntent] = []
    notify = _staff_to_notify(assignee, result.notify, policy.rules, exclude=mail.from_addr)
    if spam == "spam":
        # Quarantined: no confirmation (backscatter to forged senders), no one woken.
        events.append(("spam", "scored spam: quarantined"))
        return Decision(
            action="new_ticket", message_kind="customer", new_ticket=ticket, events=tuple(events)
        )
    if spam == "unsure":
        # Held: staff decide; the confirmation goes out when it is released as ham.
        events.append(("spam", "scored unsure: held for a staff decision"))
        mails = [MailIntent("notification", notify, "en", "possible_spam")] if notify else []
        return Decision(
            action="new_ticket",
            message_kind="customer",
            new_ticket=ticket,
            mails=tuple(mails),
            events=tuple(events),
        )
    refusal = confirmation_refusal(kind, sender, policy, mail.from_addr)
    if refusal:
        events.append(("no_confirmation", refusal))
    else:
        mails.append(MailIntent("confirmation", (mail.from_addr,), language, "new"))
    if notify:
        mails.append(MailIntent("notification", notify, "en", "new"))
    return Decision(
        action="new_ticket",
        message_kind="auto_reply" if kind.kind == "auto_reply" else "customer",
        new_ticket=ticket,
        mails=tuple(mails),
        events=tuple(events),
    )


def confirmation_refusal(
    kind: Classification, sender: SenderFacts, policy: Policy, address: str
) -> str | None:
    """Why no automatic confirmation may go to this sender (DESIGN invariant 4), or None."""
    if not kind.may_auto_reply:
        return "; ".join(kind.reasons) or kind.kind
    if sender.suppressed:
        return f"{address} hard-bounced recently"
    if sender.auto_replies_last_hour >= policy.auto_reply_limit_per_hour:
        return f"{policy.auto_reply_limit_per_hour} automatic replies to {address} in the last hour"
    return None


def _staff_to_notify(
    assignee: str | None, extra: tuple[str, ...], rules: RulesConfig, exclude: str
) -> tuple[str, ...]:
    base = [assignee] if assignee else [m.email for m in rules.admins]
    return tuple(a for a in dict.fromkeys([*base, *extra]) if a and a != exclude)


def _new_ccs(mail: InboundMail, known: frozenset[str], own: frozenset[str]) -> tuple[str, ...]:
    candidates = [a for a in (*mail.to, *mail.cc) if a not in own and a not in known]
    return tuple(a for a in dict.fromkeys(candidates) if not _is_own(a, own))


def _is_own(address: str, own: frozenset[str]) -> bool:
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" in own
