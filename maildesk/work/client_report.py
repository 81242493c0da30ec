"""The monthly client report: done tickets per client, as data, a chart and a mail.

A client is a group under `clients:` in sla.yaml, else the requester's mail domain
(the organisation). The mail (templates/<lang>/client_report.*) carries a PNG chart
inline; it goes to the admins (every client) or to one client's contacts, and is
queued at most once per month and recipient set: its Message-ID is derived from
both, and the outbox's unique Message-ID is the claim (two daemons, two runs).
"""

from __future__ import annotations

import calendar
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from maildesk.config.runtime import Runtime
from maildesk.core.compose import InlineImage, OutgoingMail, compose, new_message_id
from maildesk.core.reports import ReportInputError, TicketFacts, iso_utc, month_window, report_zone
from maildesk.core.sla import DOMAIN_RE, SlaConfig, format_duration
from maildesk.storage.enqueue import add_outbox
from maildesk.storage.models import Outbox
from maildesk.storage.reports import load_done

KIND = "client_report"
ADMINS = "*"  # the key of the admins' mail (every client)


# -- which tickets, per client (pure) -----------------------------------------------------


@dataclass(frozen=True)
class ClientSelector:
    """--client: a client of sla.yaml, an organisation (domain), or one requester."""

    client: str
    address: str | None = None  # only this requester's tickets


def select_client(sla: SlaConfig, value: str) -> ClientSelector:
    text = value.strip().lower()
    if value.strip() in sla.clients:
        return ClientSelector(value.strip())
    local, at, domain = text.rpartition("@")
    if (not DOMAIN_RE.fullmatch(domain) or (at and (not local or "@" in local))
            or any(c.isspace() for c in text)):
        known = ", ".join(sla.clients) or "none in sla.yaml"
        raise ReportInputError(
            f"--client {value!r}: not a client name ({known}), a domain or an address"
        )
    client = sla.client_of(text if at else f"x@{domain}")
    if at and client not in sla.clients:
        return ClientSelector(client, address=text)
    return ClientSelector(client)


@dataclass(frozen=True)
class ClientReport:
    client: str
    title: str
    tickets: tuple[TicketFacts, ...]  # by when they were done

    @property
    def time_spent_minutes(self) -> int:
        return sum(t.time_spent_minutes for t in self.tickets)

    @property
    def good(self) -> int:
        return sum(1 for t in self.tickets if t.rating == "good")

    @property
    def bad(self) -> int:
        return sum(1 for t in self.tickets if t.rating == "bad")

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client, "title": self.title, "tickets": len(self.tickets),
            "time_spent_minutes": self.time_spent_minutes, "rated_good": self.good,
            "rated_bad": self.bad,
            "ticket_list": [client_ticket_dict(self.client, t) for t in self.tickets],
        }


def client_ticket_dict(client: str, t: TicketFacts) -> dict[str, Any]:
    return {
        "client": client, "tid": t.tid, "subject": t.subject, "requester": t.requester,
        "status": t.status, "created_at": iso_utc(t.created_at), "done_at": iso_utc(t.done_at),
        "time_spent_minutes": t.time_spent_minutes, "rating": t.rating,
    }


def client_reports(
    tickets: Sequence[TicketFacts], sla: SlaConfig, only: ClientSelector | None = None
) -> list[ClientReport]:
    """Done tickets grouped by client; most tickets first, then by name."""
    groups: dict[str, list[TicketFacts]] = {}
    for t in tickets:
        client = sla.client_of(t.requester)
        if only is not None and (client != only.client
                                 or (only.address and t.requester.lower() != only.address)):
            continue
        groups.setdefault(client, []).append(t)
    reports = [
        ClientReport(
            client=name,
            title=(sla.clients[name].title or name) if name in sla.clients else name,
            tickets=tuple(sorted(items, key=lambda t: (t.done_at or t.created_at, t.id))),
        )
        for name, items in groups.items()
    ]
    reports.sort(key=lambda r: (-len(r.tickets), r.client))
    return reports


# -- the chart and the mail (pure) ------------------------------------------------------

_WORDS = {
    "en": {"subject": "Support report for {month}", "day": "day of {month}",
           "closed": "requests closed"},
    "ru": {"subject": "Отчёт службы поддержки за {month}", "day": "дни ({month})",
           "closed": "закрыто заявок"},
}


def _words(language: str) -> dict[str, str]:
    return _WORDS.get(language, _WORDS["en"])


def render_chart(reports: Sequence[ClientReport], month: str, zone: ZoneInfo,
                 language: str) -> bytes:
    """A PNG: one client's requests closed per day of the month, or requests per client
    (the 15 with most). matplotlib's Agg canvas, without pyplot's global state."""
    # slow to import: only when a chart is drawn
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    words = _words(language)
    figure = Figure(figsize=(7, 3.2), dpi=100)
    axes = figure.add_subplot()
    if len(reports) == 1:
        year, number = (int(part) for part in month.split("-"))
        per_day = [0] * calendar.monthrange(year, number)[1]
        for t in reports[0].tickets:
            if t.done_at is not None:
                per_day[t.done_at.astimezone(zone).day - 1] += 1
        axes.bar(range(1, len(per_day) + 1), per_day, color="#3b73b9")
        axes.set_xlabel(words["day"].format(month=month))
        axes.set_ylabel(words["closed"])
        axes.set_xlim(0.5, len(per_day) + 0.5)
    else:
        top = list(reversed(reports[:15]))
        axes.barh([r.title for r in top], [len(r.tickets) for r in top], color="#3b73b9")
        axes.set_xlabel(words["closed"])
    (axes.yaxis if len(reports) == 1 else axes.xaxis).set_major_locator(
        MaxNLocator(integer=True))
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def mail_context(reports: Sequence[ClientReport], month: str, zone: ZoneInfo,
                 support_address: str, chart_cid: str | None) -> dict[str, Any]:
    """The variables of templates/<lang>/client_report.* (render.CONTEXT_KEYS)."""
    clients = [
        {"title": r.title, "tickets": len(r.tickets),
         "time_spent": format_duration(r.time_spent_minutes), "good": r.good, "bad": r.bad,
         "ticket_list": [
             {"tid": t.tid, "subject": t.subject, "requester": t.requester,
              "done": t.done_at.astimezone(zone).strftime("%Y-%m-%d") if t.done_at else "",
              "time_spent": format_duration(t.time_spent_minutes), "rating": t.rating}
             for t in r.tickets
         ]}
        for r in reports
    ]
    totals = {"tickets": sum(len(r.tickets) for r in reports),
              "time_spent": format_duration(sum(r.time_spent_minutes for r in reports)),
              "good": sum(r.good for r in reports), "bad": sum(r.bad for r in reports)}
    return {"month": month, "clients": clients, "totals": totals, "chart_cid": chart_cid,
            "support_address": support_address}


def report_message_id(month: str, key: str, domain: str) -> str:
    """The same for the same month and recipients: the outbox takes it once."""
    digest = hashlib.sha256(f"{month}\0{key}".encode()).hexdigest()[:20]
    return f"client-report.{month}.{digest}@{domain}"


def build_mail(runtime: Runtime, month: str, reports: Sequence[ClientReport],
               recipients: Sequence[str], language: str, now: datetime,
               message_id: str, title: str | None = None) -> OutgoingMail:
    """To the admins (every client), or to one client's contacts (`title`: its name)."""
    zone = report_zone(runtime.sla)
    domain = message_id.rpartition("@")[2]
    inline: tuple[InlineImage, ...] = ()
    if any(r.tickets for r in reports):
        cid = f"chart.{message_id.partition('@')[0]}@{domain}"
        inline = (InlineImage(cid, f"report-{month}.png",
                              render_chart(reports, month, zone, language)),)
    context = mail_context(reports, month, zone, runtime.settings.primary_address,
                           inline[0].content_id if inline else None)
    subject = _words(language)["subject"].format(month=month)
    if title:
        subject += f": {title}"
    return compose(
        from_addr=runtime.settings.primary_address, from_name="Support", to=tuple(recipients),
        subject=subject, body=runtime.templates.render(KIND, language, context), now=now,
        message_id=message_id, inline=inline, auto_submitted="auto-generated",
    )


# -- queueing (the session's transaction) -------------------------------------------------


def queue_report(session: Session, runtime: Runtime, month: str, key: str,
                 recipients: Sequence[str], reports: Sequence[ClientReport], language: str,
                 now: datetime, title: str | None = None, resend: bool = False) -> str | None:
    """Queue the mail unless this month's mail for `key` (a client, or ADMINS) is queued
    already (then None); `resend` queues another one anyway. Returns its Message-ID."""
    domain = runtime.settings.primary_address.partition("@")[2] or "localhost"
    message_id = new_message_id(domain) if resend else report_message_id(month, key, domain)
    if session.exec(select(Outbox.id).where(Outbox.message_id == message_id)).first():
        return None
    out = build_mail(runtime, month, reports, recipients, language, now, message_id, title)
    try:
        with session.begin_nested():  # another daemon may have queued it meanwhile
            add_outbox(session, None, KIND, out, now)
    except IntegrityError:
        return None
    return message_id


def queue_client_reports(session: Session, runtime: Runtime, month: str, now: datetime) -> int:
    """The monthly job (on the 1st, for the month before): the overview to the admins and
    each configured client's report to its contacts, for clients with tickets done that
    month; each at most once per month. Returns how many mails it queued now."""
    start, end = month_window(month, report_zone(runtime.sla))
    reports = client_reports(load_done(session, start, end), runtime.sla)
    if not reports:
        return 0
    default = runtime.settings.language
    queued = 0
    admins = tuple(m.email for m in runtime.rules.admins)
    if admins and queue_report(session, runtime, month, ADMINS, admins, reports, default, now):
        queued += 1
    for report in reports:
        group = runtime.sla.clients.get(report.client)
        if group is not None and group.contacts and queue_report(
            session, runtime, month, report.client, group.contacts, [report],
            group.language or default, now, title=report.title,
        ):
            queued += 1
    return queued
