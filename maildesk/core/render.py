"""jinja2 mail templates: text + HTML per language, strictly checked (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

LANGUAGES = ("en", "ru")

# What an SLA reminder may use (sla.yaml names the template of each escalation step).
SLA_KEYS = frozenset(
    {
        "tid", "subject", "customer_name", "customer_email", "sla_name", "target", "due",
        "kind", "assignee", "status", "priority", "overdue", "left",
    }
)

# What every mail about a ticket may use.
TICKET_KEYS = frozenset(
    {"tid", "subject", "customer_name", "customer_email", "sla_name", "due", "support_address"}
)

# The variables each template may use; the pipeline always passes all of them.
CONTEXT_KEYS: dict[str, frozenset[str]] = {
    "confirmation": TICKET_KEYS | {"linked_tid"},
    "notification": TICKET_KEYS
    | {
        "assignee",
        "group",
        "priority",
        "category",
        "body",
        "rules_fired",
        "event",
        "attachments",
        "author",
        "status",
    },
    **{
        name: SLA_KEYS
        for name in ("sla_warning", "sla_breach", "sla_escalation")
    },
    "update": frozenset(
        {
            "tid",
            "subject",
            "customer_name",
            "customer_email",
            "support_address",
            "event",
            "assignee_name",
            "body",
            "history",
            "rating_good",
            "rating_bad",
        }
    ),
    # maildesk.report_mail: the monthly client report (to the admins or a client's contacts)
    "client_report": frozenset({"month", "clients", "totals", "chart_cid", "support_address"}),
}

SAMPLE_CONTEXT: dict[str, Any] = {
    "tid": "MD-1",
    "subject": "Printer <b>on fire</b>",
    "customer_name": "Ann Customer",
    "customer_email": "ann@example.org",
    "sla_name": "Standard",
    "due": "Monday, 7 December, 14:30 (Moscow time)",
    "support_address": "support@localhost",
    "assignee": "alice@example.com",
    "group": "l1",
    "priority": "normal",
    "category": "general",
    "body": "Hello,\nmy printer is on fire.",
    "rules_fired": ["billing questions"],
    "event": "new",
    "attachments": ["invoice.pdf"],
    "author": None,
    "linked_tid": "MD-0",
    "status": "open",
    "assignee_name": "Alice",
    "history": [{"at": "2026-01-01 10:00 UTC", "who": "Ann Customer", "text": "Help <b>me</b>"}],
    "rating_good": "support+rate.1.0123456789.good@localhost",
    "rating_bad": "support+rate.1.0123456789.bad@localhost",
    "target": "first_response",
    "kind": "breach",
    "overdue": "2h 15m",
    "left": "1h",
    "month": "2026-11",
    "clients": [{"title": "Partner <b>Ltd</b>", "tickets": 1, "time_spent": "1h30m", "good": 1,
                 "bad": 0, "ticket_list": [{"tid": "MD-1", "done": "2026-11-20",
                                            "time_spent": "1h30m", "rating": "good",
                                            "subject": "Printer <b>on fire</b>",
                                            "requester": "ann@example.org"}]}],
    "totals": {"tickets": 1, "time_spent": "1h30m", "good": 1, "bad": 0},
    "chart_cid": "chart.2026-11@localhost",
}


CANNED_KEYS = frozenset({"tid", "subject", "customer_name", "customer_email", "author"})
_CANNED_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


def render_canned(source: str, context: Mapping[str, Any]) -> str:
    """A canned answer (templates/canned/<language>/<name>.txt) with the ticket's values."""
    return _CANNED_ENV.from_string(source).render(context).strip("\n")


@dataclass(frozen=True)
class RenderedMail:
    text: str
    html: str


class Templates:
    """templates/<lang>/<name>.txt and .html, held in memory; HTML is autoescaped.

    The sources are read once with the config: what `check` validated is what
    renders, even when a file is edited afterwards (a reload that fails keeps
    the old templates, DESIGN invariant 6).
    """

    def __init__(self, directory: Path, sources: Mapping[str, str]) -> None:
        """`sources`: relative path (``en/confirmation.txt``) -> template text, as read
        from `directory` (config.files.load_templates), which names them in errors."""
        self.directory = directory
        self.extra_sla: tuple[str, ...] = ()  # sla.yaml's own escalation templates
        self._sources = dict(sources)
        self._canned = self._find_canned()  # read per mail (Runtime.policy): found once
        self._env = jinja2.Environment(
            loader=jinja2.DictLoader(self._sources),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=True,
        )

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> RenderedMail:
        language = language if language in LANGUAGES else "en"
        text = self._env.get_template(f"{language}/{name}.txt").render(context)
        html = self._env.get_template(f"{language}/{name}.html").render(context)
        return RenderedMail(text=text, html=html)

    def canned(self) -> dict[str, dict[str, str]]:
        """Canned answers for #canned: name -> language -> template source."""
        return self._canned

    def _find_canned(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for relative, source in self._sources.items():
            parts = relative.split("/")
            if len(parts) == 3 and parts[0] == "canned" and parts[2].endswith(".txt"):
                found.setdefault(parts[2].removesuffix(".txt"), {})[parts[1]] = source
        return found

    def check(self) -> list[str]:
        """Every template exists, parses, uses only known variables, and renders."""
        problems: list[str] = []
        for name, allowed in CONTEXT_KEYS.items():
            for language in LANGUAGES:
                for ext in ("txt", "html"):
                    problems.extend(self._check_one(f"{language}/{name}.{ext}", allowed))
        for name in sorted(set(self.extra_sla) - set(CONTEXT_KEYS)):
            for language in LANGUAGES:
                for ext in ("txt", "html"):
                    problems.extend(self._check_one(f"{language}/{name}.{ext}", SLA_KEYS))
        for name, languages in sorted(self.canned().items()):
            for language in sorted(languages):
                problems.extend(self._check_one(f"canned/{language}/{name}.txt", CANNED_KEYS))
        return problems

    def _check_one(self, relative: str, allowed: frozenset[str]) -> list[str]:
        path = self.directory / relative
        source = self._sources.get(relative)
        if source is None:
            return [f"{path}: template missing"]
        try:
            parsed = self._env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            return [f"{path}:{exc.lineno}: {exc.message}"]
        problems = []
        for var in sorted(meta.find_undeclared_variables(parsed) - allowed):
            line = _line_of(source, var)
            problems.append(
                f"{path}:{line}: unknown variable {var!r} (known: {', '.join(sorted(allowed))})"
            )
        if not problems:
            try:
                self._env.get_template(relative).render(SAMPLE_CONTEXT)
            except jinja2.TemplateError as exc:
                problems.append(f"{path}: does not render: {exc}")
        return problems


def _line_of(source: str, name: str) -> int:
    found = re.search(r"\b" + re.escape(name) + r"\b", source)
    return source.count("\n", 0, found.start()) + 1 if found else 1
