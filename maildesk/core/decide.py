"""The pure core: one parsed mail plus the state it needs -> a Decision.

Nothing here touches the database, the network or the clock; the flow of a mail
(maildesk.work.handle) gathers the facts, calls `decide`, and applies the result.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from maildesk.core.answer import decide_staff_mail
from maildesk.core.classify import Classification
from maildesk.core.commands import first_line, parse_commands
from maildesk.core.decision import (
    CLOSED_STATUSES,
    Alert,
    Decision,
    Facts,
    MailIntent,
    NewTicket,
    Policy,
    SenderFacts,
    SpamBand,
    ThreadMatch,
    TicketState,
    Workload,
)
from maildesk.core.forwarded import find_forwarded
from maildesk.core.identity import Identity
from maildesk.core.newticket import confirmation_refusal, new_ccs, new_ticket, staff_to_notify
from maildesk.core.parse import InboundMail
from maildesk.core.ratings import decide_rating
from maildesk.core.tid import format_tid

__all__ = [
    "CLOSED_STATUSES",
    "Alert",
    "Decision",
    "Facts",
    "MailIntent",
    "NewTicket",
    "Policy",
    "SenderFacts",
    "SpamBand",
    "ThreadMatch",
    "TicketState",
    "Workload",
    "confirmation_refusal",
    "decide",
    "may_join",
]


def may_join(ticket: TicketState, identity: Identity) -> bool:
    """A TID or reference is not a key: only participants and proven staff join (invariant 5)."""
    return identity.is_staff or (bool(identity.address) and identity.address in ticket.participants)


def decide(mail: InboundMail, facts: Facts, policy: Policy, now: datetime) -> Decision:
    """What becomes of one mail. Spam only matters for new tickets: a participant's
    reply is never quarantined."""
    kind, thread, identity, sender = facts.kind, facts.thread, facts.identity, facts.sender
    if kind.kind == "bounce":
        return _bounce(mail, thread)
    decision = _decide(mail, facts, policy, now)
    events = [("identity", f"{identity.role}: {identity.reason}")]
    if thread.reason:
        events.append(("thread", thread.reason))
    for problem in mail.dropped:
        events.append(("header", f"ignored {problem}"))
    alerts = list(decision.alerts)
    if identity.spoof and "spoof" not in sender.alerted:
        alerts.append(_spoof_alert(mail, identity))
    return replace(decision, events=(*events, *decision.events), alerts=tuple(alerts))


def _decide(mail: InboundMail, facts: Facts, policy: Policy, now: datetime) -> Decision:
    kind, thread, identity, sender = facts.kind, facts.thread, facts.identity, facts.sender
    if thread.via == "rating" and thread.ticket is not None and thread.rating:
        return decide_rating(mail, kind, thread.ticket, thread.rating)
    if thread.ticket is not None and _reopen_window_passed(thread.ticket, identity, policy, now):
        old = thread.ticket.id
        thread = replace(
            thread, ticket=None, refused=(old, *thread.refused), continues=old,
            reason=f"{format_tid(old)} is closed for longer than {policy.reopen_days:g} days:"
            " a new ticket, linked to it",
        )
    if thread.ticket is not None:
        return _append(mail, kind, thread.ticket, identity, policy, sender, now)
    if identity.is_staff and first_line(mail.text).lower().startswith("#new-for"):
        return _new_for(mail, replace(facts, thread=thread), policy, now)
    if kind.kind == "auto_reply" and thread.refused_ticket is not None:
        # An out-of-office about one of our mails from someone not on that ticket:
        # noted there; it opens nothing and wakes nobody.
        return Decision(
            action="note",
            message_kind="auto_reply",
            ticket=thread.refused_ticket,
            events=(("auto_reply", f"from {mail.from_addr or '(no sender)'}: "
                     + "; ".join(kind.reasons)),),
        )
    if sender.same_body_ticket is not None:
        return _silent_append(
            sender.same_body_ticket,
            ("storm", "same body from this sender within the hour: added here, nobody mailed"),
        )
    limit = policy.new_tickets_per_sender_per_hour
    if sender.latest_ticket is not None and sender.new_tickets_last_hour >= limit:
        appended = _silent_append(
            sender.latest_ticket,
            ("storm", f"{mail.from_addr} opened {limit} tickets within the hour: "
                      "added to their latest ticket, nobody mailed"),
        )
        if "storm" in sender.alerted:
            return appended
        return replace(appended, alerts=(_storm_alert(mail, limit),))
    return new_ticket(mail, replace(facts, thread=thread), policy, now)


def _new_for(mail: InboundMail, facts: Facts, policy: Policy, now: datetime) -> Decision:
    """A staff member forwards a customer's mail with `#new-for [ADDRESS]` first: a ticket
    on the customer's behalf (requester: the address given, else the forwarded From),
    its first message the forwarded text. Any problem: nothing opens, the author is told."""
    author = facts.identity.address
    parsed = parse_commands(mail.text, policy.rules, policy.sla.levels, author, now)
    errors = list(parsed.errors)
    errors += [f"{c.line}: not with #new-for" for c in parsed.commands if c.name != "new-for"]
    given = next((c.value for c in parsed.commands if c.name == "new-for" and c.value), None)
    original = find_forwarded(mail)
    requester = given or (original.address if original else "")
    if not requester:
        errors.append("#new-for: no customer address: write #new-for ADDRESS, or forward "
                      "the customer's mail (inline or as an attachment)")
    elif policy.rules.member(requester) or requester in policy.own_addresses:
        errors.append(f"#new-for: {requester} is one of us, not a customer")
    if errors:
        return Decision(
            action="refused",
            message_kind="staff",
            events=(("refused", f"#new-for by {author} not applied: " + "; ".join(errors)),),
            alerts=(Alert("refused", author, f"[not applied] {mail.subject}"[:200], (
                "Your mail opened NO ticket and nothing reached a customer:", "",
                *(f"  {e}" for e in errors), "", "Fix the line and send the mail again.")
                , to=(author,)),),
        )
    name = original.name if original and original.address == requester else ""
    customer = replace(
        mail,
        from_addr=requester,
        from_name=name,
        subject=(original.subject if original and original.subject else mail.subject),
        text=(original.text if original and original.text else parsed.body),
        html=None,
        cc=(),
        to=(),
    )
    decision = new_ticket(customer, replace(facts, spam="ham"), policy, now)
    return replace(decision, message_kind="customer",
                   events=(("created", f"by {author} on behalf of {requester} (#new-for)"),
                           *decision.events))



def _reopen_window_passed(
    ticket: TicketState, identity: Identity, policy: Policy, now: datetime
) -> bool:
    """A customer's reply reopens a resolved or closed ticket only within the window."""
    if identity.is_staff or ticket.status not in CLOSED_STATUSES or ticket.updated_at is None:
        return False
    return (now - ticket.updated_at).total_seconds() > policy.reopen_days * 86400


def _silent_append(ticket: TicketState, event: tuple[str, str]) -> Decision:
    return Decision(action="append", message_kind="customer", ticket=ticket, events=(event,))


def _spoof_alert(mail: InboundMail, identity: Identity) -> Alert:
    claimed = identity.spoof or ""
    return Alert(
        "spoof",
        claimed,
        f"maildesk: possible spoof of {claimed}",
        (
            f"A mail claimed to come from staff address {claimed} without proof.",
            "It was treated as a customer mail (no staff powers).",
            "",
            f"Why:         {identity.reason}",
            f"From:        {mail.from_name} <{mail.from_addr}>",
            f"Subject:     {mail.subject}",
            f"Message-ID:  {mail.message_id or '(none)'}",
            *(f"Auth-Res:    {v}" for v in mail.header_all("authentication-results")[:3]),
            "",
            "Further attempts for this address are not mailed for an hour; they are in the",
            "ticket events (`maildesk show`).",
        ),
    )


def _storm_alert(mail: InboundMail, limit: int) -> Alert:
    return Alert(
        "storm",
        mail.from_addr,
        f"maildesk: mail storm from {mail.from_addr}",
        (
            f"{mail.from_addr} opened {limit} or more tickets within the last hour.",
            "Their further mails are added to their latest ticket without notifications",
            "or confirmations. Check for an autoresponder or a mail loop.",
            "",
            f"Last subject: {mail.subject}",
        ),
    )


def _bounce(mail: InboundMail, thread: ThreadMatch) -> Decision:
    """Only a report about a mail we sent (VERP token or its Message-ID) suppresses, and
    only the recipients that mail went to: a forged report silences nobody."""
    report = mail.report
    failed = report.failed_recipients if report and report.permanent else ()
    ours = set(thread.bounce_recipients)
    suppress = tuple(a for a in failed if a in ours)
    events: list[tuple[str, str]] = []
    if suppress:
        events.append(("bounce", f"hard bounce for {', '.join(suppress)}"))
    ignored = [a for a in failed if a not in ours]
    if ignored:
        events.append(("bounce", f"ignored: not a recipient of our mail: {', '.join(ignored)}"))
    if thread.ticket is None:
        return Decision(
            action="orphan_bounce", message_kind="bounce", suppress=suppress, events=tuple(events)
        )
    return Decision(
        action="append",
        message_kind="bounce",
        ticket=thread.ticket,
        suppress=suppress,
        events=tuple(events) or (("bounce", "delivery report"),),
    )


def _append(
    mail: InboundMail,
    kind: Classification,
    ticket: TicketState,
    identity: Identity,
    policy: Policy,
    sender: SenderFacts,
    now: datetime,
) -> Decision:
    if kind.kind == "auto_reply" and not identity.is_staff:
        # An out-of-office never reopens, closes or notifies anything.
        return Decision(
            action="append",
            message_kind="auto_reply",
            ticket=ticket,
            events=(("auto_reply", "; ".join(kind.reasons)),),
        )
    if identity.is_staff:
        return decide_staff_mail(mail, kind, ticket, identity, policy, sender, now)
    reopen = ticket.status in CLOSED_STATUSES
    # The ball is back with staff: answered or postponed tickets open again.
    waiting = ticket.status in ("answered", "pending")
    add_cc = new_ccs(mail, ticket.participants, policy.own_addresses, policy.rules)
    notify = staff_to_notify(ticket.assignee, (), policy.rules, exclude=mail.from_addr)
    events: list[tuple[str, str]] = []
    if reopen or waiting:
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
        status="open" if waiting else None,
        add_cc=add_cc,
        mails=mails,
        events=tuple(events),
    )


