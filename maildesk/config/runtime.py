"""Everything loaded from configuration, validated once and passed around (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from maildesk.config.files import builtin_note, load_rules, load_sla, load_templates
from maildesk.config.settings import Settings
from maildesk.core.caps import NotifyLimits
from maildesk.core.decide import Policy
from maildesk.core.identity import Trust
from maildesk.core.notify import Sender
from maildesk.core.render import Templates
from maildesk.core.rules import RulesConfig
from maildesk.core.sla import SlaConfig
from maildesk.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    rules: RulesConfig
    sla: SlaConfig
    templates: Templates
    hmac_key: bytes
    notes: tuple[str, ...] = ()  # not errors, but an operator should know (logged at start)

    @property
    def policy(self) -> Policy:
        return Policy(
            rules=self.rules,
            sla=self.sla,
            own_addresses=frozenset(self.settings.accepted_addresses),
            default_language=self.settings.language,
            auto_reply_limit_per_hour=self.settings.auto_reply_limit_per_hour,
            new_tickets_per_sender_per_hour=self.settings.new_tickets_per_sender_per_hour,
            reopen_days=self.settings.reopen_days,
            canned=self.templates.canned(),
        )

    @property
    def trust(self) -> Trust:
        comment = self.settings.comment_address.strip().lower() or None
        return Trust(self.rules, self.hmac_key, self.settings.trusted_authserv_ids, comment)

    @property
    def limits(self) -> NotifyLimits:
        return NotifyLimits(
            per_hour=self.settings.notify_limit_per_hour,
            per_ticket=self.settings.notify_limit_per_ticket,
        )

    @property
    def sender(self) -> Sender:
        return Sender(self.settings.primary_address, "Support", self.hmac_key)


def load_runtime(settings: Settings) -> Runtime:
    """Load rules, SLA and templates; every problem found is reported at once."""
    problems: list[str] = []
    notes: list[str] = []
    rules = sla = templates = None
    try:
        sla = load_sla(settings.sla)
        note = builtin_note(settings.sla)
        if note:
            notes.append(note)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        rules = load_rules(settings.rules, sla.levels if sla is not None else None)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        templates = load_templates(settings.templates)
        if sla is not None:
            templates.extra_sla = tuple(
                step.template for level in sla.levels.values() for step in level.escalation
            )
        problems.extend(templates.check())
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or rules is None or sla is None or templates is None:
        raise ConfigError(problems)
    return Runtime(settings, rules, sla, templates, settings.hmac_key(), tuple(notes))
