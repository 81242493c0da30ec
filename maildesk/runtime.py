"""Everything loaded from configuration, validated once and passed around (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from maildesk.errors import ConfigError
from maildesk.notify import Sender
from maildesk.pipeline import Policy
from maildesk.render import Templates
from maildesk.rules import RulesConfig, load_rules
from maildesk.settings import Settings
from maildesk.sla import SlaConfig, load_sla


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    rules: RulesConfig
    sla: SlaConfig
    templates: Templates
    hmac_key: bytes

    @property
    def policy(self) -> Policy:
        return Policy(
            rules=self.rules,
            sla=self.sla,
            own_addresses=frozenset(self.settings.support_addresses),
            default_language=self.settings.language,
            auto_reply_limit_per_hour=self.settings.auto_reply_limit_per_hour,
        )

    @property
    def sender(self) -> Sender:
        return Sender(self.settings.primary_address, "Support", self.hmac_key)


def load_runtime(settings: Settings) -> Runtime:
    """Load rules, SLA and templates; every problem found is reported at once."""
    problems: list[str] = []
    rules = sla = templates = None
    try:
        rules = load_rules(settings.rules)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        sla = load_sla(settings.sla)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        templates = Templates(settings.templates)
        problems.extend(templates.check())
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or rules is None or sla is None or templates is None:
        raise ConfigError(problems)
    return Runtime(settings, rules, sla, templates, settings.hmac_key())
