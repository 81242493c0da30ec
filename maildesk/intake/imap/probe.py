"""`maildesk imap test`: connect, look, and say what the poller would do.

Touches nothing: the folder is opened with EXAMINE (read-only), other
folders are only counted with STATUS, nothing is created or moved, and the
database is only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from maildesk.intake.imap.lease import holder_exists
from maildesk.intake.imap.plan import PollerOptions
from maildesk.intake.imap.session import ImapSession
from maildesk.intake.imap.state import MailboxState, StateStore
from maildesk.intake.imap.url import Mailbox


@dataclass
class ProbeReport:
    mailbox: str
    security: str = ""
    capabilities: list[str] = field(default_factory=list)
    messages: int = 0
    uidvalidity: int = 0
    uidnext: int = 0
    new_since_last_run: int | None = None
    folders: dict[str, int | None] = field(default_factory=dict)  # None: missing
    state: MailboxState | None = None
    state_problem: str | None = None
    other_instance_polling: bool | None = None
    plan: list[str] = field(default_factory=list)


def probe(mailbox: Mailbox, options: PollerOptions, engine: Engine | None) -> ProbeReport:
    """Blocking. Raises ImapAuthFailed / ImapRefused / ImapUnavailable / ConfigError."""
    report = ProbeReport(mailbox.label)
    if engine is not None:
        try:
            report.state = StateStore(engine, mailbox.key).load()
            report.other_instance_polling = holder_exists(engine, mailbox.key)
        except Exception as exc:
            report.state_problem = " ".join(str(exc).split())[:300]
    session = ImapSession.connect(mailbox)
    try:
        report.security = session.security.value
        report.capabilities = session.capabilities
        info = session.select(mailbox.folder, readonly=True)
        report.messages, report.uidvalidity, report.uidnext = (
            info.exists,
            info.uidvalidity,
            info.uidnext,
        )
        uids = session.search_all()
        for name in (options.done_folder, options.errors_folder):
            report.folders[name] = session.count(name) if session.folder_exists(name) else None
    finally:
        session.close()
    state = report.state
    rescan = state is None or state.uidvalidity != info.uidvalidity
    if state is not None and not rescan:
        report.new_since_last_run = sum(1 for u in uids if u > state.last_uid)
    report.plan = _plan(mailbox, options, session, report, len(uids), rescan)
    return report


def _plan(
    mailbox: Mailbox,
    options: PollerOptions,
    session: ImapSession,
    report: ProbeReport,
    waiting: int,
    rescan: bool,
) -> list[str]:
    plan: list[str] = []
    for name, count in report.folders.items():
        if count is None:
            plan.append(f"create folder {name}")
    state = report.state
    if state is not None and state.uidvalidity is not None and rescan:
        plan.append(
            f"UIDVALIDITY changed ({state.uidvalidity} -> {report.uidvalidity}): "
            "rescan the whole folder (duplicates are recognised)"
        )
    what = f"ingest {waiting} message(s) from {mailbox.folder}"
    if report.new_since_last_run is not None:
        what += f" ({report.new_since_last_run} new since UID {state.last_uid if state else 0})"
    plan.append(what)
    if state is not None and state.failures:
        plan.append(f"retry {len(state.failures)} message(s) that failed before")
    plan.append(
        f"flag each \\Seen and {'MOVE' if session.can_move else 'COPY+EXPUNGE'} it to "
        f"{options.done_folder} once its ticket is committed; failures go to "
        f"{options.errors_folder} after {options.max_failures} tries"
    )
    plan.append(
        "then wait in IDLE (new mail within seconds), with a full check every "
        f"{options.poll_seconds:g} s"
        if session.can_idle
        else f"then poll every {options.poll_seconds:g} s (the server has no IDLE)"
    )
    if report.other_instance_polling:
        plan.append("note: another maildesk instance holds this mailbox's lease right now")
    return plan
