"""The IMAP poller: mailboxes in MAILDESK_IMAP_URL become tickets.

`make_pollers(settings, engine, spool)` gives the daemon one worker per mailbox.
"""

from maildesk.intake.imap.handover import PollerHooks
from maildesk.intake.imap.plan import PollerOptions, PollerState
from maildesk.intake.imap.poller import Poller
from maildesk.intake.imap.service import make_pollers
from maildesk.intake.imap.url import Mailbox, parse_mailboxes

__all__ = [
    "Mailbox",
    "Poller",
    "PollerHooks",
    "PollerOptions",
    "PollerState",
    "make_pollers",
    "parse_mailboxes",
]
