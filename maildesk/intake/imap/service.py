"""The pollers of every mailbox in MAILDESK_IMAP_URL, built from the settings."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from maildesk.config.settings import Settings
from maildesk.intake.imap.handover import NO_HOOKS, PollerHooks
from maildesk.intake.imap.plan import PollerOptions
from maildesk.intake.imap.poller import Poller
from maildesk.intake.imap.url import Mailbox, parse_mailboxes
from maildesk.intake.spool import Spool

log = logging.getLogger(__name__)



def options_from_settings(settings: Settings) -> PollerOptions:
    return PollerOptions(
        done_folder=settings.imap_done_folder,
        poll_seconds=settings.imap_poll_seconds,
    )


def mailboxes_from_settings(settings: Settings) -> list[Mailbox]:
    """The configured mailboxes; a ConfigError names the variable and the problem."""
    return parse_mailboxes(settings.imap_url, settings.imap_password_file)


def make_pollers(
    settings: Settings, engine: Engine, spool: Spool, hooks: PollerHooks = NO_HOOKS
) -> list[Poller]:
    """One poller worker per mailbox (the daemon starts them after the spool).

    The spool's `on_stored` must wake the pipeline; the pollers wait for its
    verdict before they move a mail.
    """
    options = options_from_settings(settings)
    mailboxes = mailboxes_from_settings(settings)
    pollers = [Poller(mb, engine, spool, options, hooks) for mb in mailboxes]
    logging.getLogger("imapclient").setLevel(logging.WARNING)  # its per-connection chatter
    log.info(
        "imap: polling %s (done folder %s; full check every %g s, IDLE in between)",
        ", ".join(p.mailbox.label for p in pollers),
        options.done_folder,
        options.poll_seconds,
    )
    return pollers
