"""The IMAP poller: mailboxes in MAILDESK_IMAP_URL become tickets (issue 3).

`start_pollers(settings, engine, spool)` from the daemon; `health()` for /healthz.
"""

from maildesk.intake.imap.faults import Faults
from maildesk.intake.imap.plan import PollerOptions, PollerState
from maildesk.intake.imap.poller import Poller
from maildesk.intake.imap.service import ImapPollers, health, start_pollers
from maildesk.intake.imap.url import Mailbox, parse_mailboxes

__all__ = [
    "Faults",
    "ImapPollers",
    "Mailbox",
    "Poller",
    "PollerOptions",
    "PollerState",
    "health",
    "parse_mailboxes",
    "start_pollers",
]
