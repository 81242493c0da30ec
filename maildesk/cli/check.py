"""`maildesk check`: everything `run` would trip over, as one line per problem.

Problems are `file:line: why` (rules, SLA, templates) or `VARIABLE: why`
(settings); notes are what works but an operator should know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maildesk.config.settings import Settings
from maildesk.errors import ConfigError, MaildeskError
from maildesk.storage import db


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "errors": self.problems, "warnings": self.notes}


def check_all(settings: Settings) -> CheckReport:
    from maildesk.config.runtime import load_runtime
    from maildesk.intake.imap.url import parse_mailboxes
    from maildesk.work.transports import check_outbound_url

    report = CheckReport()
    try:
        runtime = load_runtime(settings)
        report.notes.extend(runtime.notes)
    except ConfigError as exc:
        report.problems.extend(exc.problems)
    try:
        check_outbound_url(settings.effective_outbound)
    except ConfigError as exc:
        report.problems.extend(exc.problems)
    warning = settings.outbound_warning()
    if warning:
        report.notes.append(warning)
    if settings.imap_url:
        try:
            parse_mailboxes(settings.imap_url, settings.imap_password_file)
        except ConfigError as exc:
            report.problems.extend(
                p if p.startswith("MAILDESK_") else f"MAILDESK_IMAP_URL: {p}" for p in exc.problems
            )
    try:
        engine = db.make_engine(settings.effective_database_url)
        try:
            db.require_current_schema(engine)
        finally:
            engine.dispose()
    except MaildeskError as exc:
        report.problems.append(f"MAILDESK_DATABASE_URL: {exc}")
    return report
