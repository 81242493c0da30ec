"""A new ticket (pure): its fields from the rules, who is told, and who gets the
confirmation; and the people rules a new or continued ticket shares."""

from __future__ import annotations

from datetime import datetime

from maildesk.core.classify import Classification
from maildesk.core.decision import (
    Decision,
    Facts,
    MailIntent,
    NewTicket,
    Policy,
    SenderFacts,
    SpamBand,
    ThreadMatch,
    Workload,
)
from maildesk.core.parse import InboundMail
from maildesk.core.rules import RuleResult, RulesConfig, evaluate, pick_assignee
from maildesk.core.tid import clean_subject


def new_ticket(mail: InboundMail, facts: Facts, policy: Policy, now: datetime) -> Decision:
    """A mail that joins no ticket opens one: the rules pick group, assignee, priority,
    category and SLA level; the spam band decides who hears of it."""
    kind, thread, identity, spam = facts.kind, facts.thread, facts.identity, facts.spam
    ticket, result = _ticket_of(mail, thread, facts.workload, policy, now, spam)
    events = _creation_events(mail, ticket, result.fired, thread)
    notify = staff_to_notify(ticket.assignee, result.notify, policy.rules, exclude=mail.from_addr)
    if spam == "spam":
        # Quarantined: no confirmation (backscatter to forged senders), no one woken.
        events.append(("spam", "scored spam: quarantined"))
        return Decision(
            action="new_ticket", message_kind="customer", new_ticket=ticket, events=tuple(events)
        )
    mails: list[MailIntent] = []
    if spam == "unsure":
        # Held: staff decide; the confirmation goes out when it is released as ham.
        events.append(("spam", "scored unsure: held for a staff decision"))
        mails = [MailIntent("notification", notify, "en", "possible_spam")] if notify else []
        return Decision(action="new_ticket", message_kind="customer", new_ticket=ticket,
                        mails=tuple(mails), events=tuple(events))
    refusal = confirmation_refusal(kind, facts.sender, policy, mail.from_addr)
    if identity.spoof == mail.from_addr and mail.from_addr:
        refusal = f"From claims staff address {mail.from_addr} without proof (possible spoof)"
    if refusal:
        events.append(("no_confirmation", refusal))
    else:
        mails.append(MailIntent("confirmation", (mail.from_addr,), ticket.language, "new",
                                continues=thread.continues))
    if notify:
        mails.append(MailIntent("notification", notify, "en", "new"))
    return Decision(
        action="new_ticket",
        message_kind="auto_reply" if kind.kind == "auto_reply" else "customer",
        new_ticket=ticket,
        mails=tuple(mails),
        events=tuple(events),
    )


def _ticket_of(
    mail: InboundMail, thread: ThreadMatch, workload: Workload, policy: Policy,
    now: datetime, spam: SpamBand,
) -> tuple[NewTicket, RuleResult]:
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
    ticket = NewTicket(
        status="spam" if spam == "spam" else "held" if spam == "unsure" else "new",
        subject=clean_subject(mail.subject) or "(no subject)",
        requester=mail.from_addr,
        requester_name=mail.from_name,
        cc=new_ccs(mail, frozenset({mail.from_addr}), policy.own_addresses, policy.rules),
        assignee=assignee,
        group=result.group,
        priority=result.priority,
        category=result.category,
        sla_level=level,
        language=mail.written_in or policy.default_language,
        first_response_due=policy.sla.first_response_due(level, now),
        rules_fired=result.fired,
        linked_to=thread.refused[0] if thread.refused else None,
    )
    return ticket, result


def _creation_events(
    mail: InboundMail, ticket: NewTicket, fired: tuple[str, ...], thread: ThreadMatch
) -> list[tuple[str, str]]:
    events = [("created", f"from {mail.from_addr or '(no sender)'}")]
    if fired:
        events.append(("rules", "fired: " + ", ".join(fired)))
    if ticket.assignee:
        group = f" (group {ticket.group})" if ticket.group else ""
        events.append(("assignee", f"-> {ticket.assignee}{group}"))
    for refused in thread.refused:
        events.append(("thread", f"mail named ticket {refused} but its sender is not on it"))
    return events


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


def staff_to_notify(
    assignee: str | None, extra: tuple[str, ...], rules: RulesConfig, exclude: str
) -> tuple[str, ...]:
    base = [assignee] if assignee else [m.email for m in rules.admins]
    return tuple(a for a in dict.fromkeys([*base, *extra]) if a and a != exclude)


def new_ccs(
    mail: InboundMail, known: frozenset[str], own: frozenset[str], rules: RulesConfig
) -> tuple[str, ...]:
    """To/Cc addresses that become participants: never ours, never a mailing list, never
    staff (a staff address acts only with a proven identity, never as a cc customer)."""
    candidates = [
        a
        for a in (*mail.to, *mail.cc)
        if a not in own and a not in known and a != mail.list_address
        and rules.member(a) is None
    ]
    return tuple(a for a in dict.fromkeys(candidates) if not is_own(a, own))


def is_own(address: str, own: frozenset[str]) -> bool:
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" in own
