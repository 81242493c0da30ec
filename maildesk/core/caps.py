"""Caps on automatic mail to staff (no storms, invariant 4). Pure.

A staff member gets at most `per_ticket` notifications about one ticket and
`per_hour` in all within an hour. The mail that would go over a cap is
replaced, once an hour, by one short notice saying what is held back; the
rest is visible in the ticket (`maildesk show`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

NoticeKind = Literal["capped_ticket", "capped_hour"]
NOTIFICATION = "notification"
CAPPED_TICKET: Final = "capped_ticket"  # outbox kinds of the notices
CAPPED_HOUR: Final = "capped_hour"


@dataclass(frozen=True)
class NotifyLimits:
    per_hour: int = 30
    per_ticket: int = 5


@dataclass(frozen=True)
class Recent:
    """What each recipient got within the last hour (from the outbox)."""

    total: Mapping[str, int]  # notifications to rcpt
    on_ticket: Mapping[str, int]  # notifications to rcpt about this ticket
    notices: frozenset[tuple[str, str]]  # (rcpt, kind) notices already sent: ticket or hour


@dataclass(frozen=True)
class Capped:
    keep: tuple[str, ...]
    notices: tuple[tuple[str, NoticeKind], ...]
    held: tuple[str, ...]  # recipients whose notification was held back


def cap_notifications(recipients: tuple[str, ...], recent: Recent, limits: NotifyLimits) -> Capped:
    keep: list[str] = []
    notices: list[tuple[str, NoticeKind]] = []
    held: list[str] = []
    for rcpt in recipients:
        if recent.total.get(rcpt, 0) >= limits.per_hour:
            held.append(rcpt)
            if (rcpt, CAPPED_HOUR) not in recent.notices:
                notices.append((rcpt, CAPPED_HOUR))
        elif recent.on_ticket.get(rcpt, 0) >= limits.per_ticket:
            held.append(rcpt)
            if (rcpt, CAPPED_TICKET) not in recent.notices:
                notices.append((rcpt, CAPPED_TICKET))
        else:
            keep.append(rcpt)
    return Capped(tuple(keep), tuple(notices), tuple(held))


def notice_lines(kind: str, tid: str, limits: NotifyLimits) -> tuple[str, tuple[str, ...]]:
    """Subject and text of the one notice sent when a cap is reached."""
    if kind == CAPPED_HOUR:
        return (
            "maildesk: notifications paused for an hour",
            (
                f"You got {limits.per_hour} notifications within the last hour.",
                "Further ones are not mailed until the hour has passed; nothing is lost:",
                "`maildesk tickets` lists the tickets and `maildesk show TID` each one.",
            ),
        )
    return (
        f"[{tid}] maildesk: further updates not mailed for an hour",
        (
            f"You got {limits.per_ticket} notifications about {tid} within the last hour.",
            "Further updates on this ticket are not mailed to you until the hour has",
            f"passed; nothing is lost: `maildesk show {tid}` shows every message.",
        ),
    )
