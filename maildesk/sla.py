"""sla.yaml: SLA levels and which senders get them (pure).

This is the groundwork: levels with first-response and resolution targets in
wall-clock hours. Business-hours calendars are a later issue.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maildesk.errors import ConfigError
from maildesk.parse import InboundMail
from maildesk.yamlfile import line_of, load_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    title: dict[str, str] = Field(default_factory=dict)  # per language, e.g. {en: Standard}
    first_response_hours: float = Field(gt=0)
    resolution_hours: float | None = Field(default=None, gt=0)

    def display(self, name: str, language: str) -> str:
        return self.title.get(language) or self.title.get("en") or name


class SenderLevel(_Strict):
    level: str
    from_address: tuple[str, ...] = ()
    from_domain: tuple[str, ...] = ()

    @field_validator("from_address", "from_domain", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class SlaConfig(_Strict):
    levels: dict[str, Level] = Field(
        default_factory=lambda: {
            "standard": Level(
                title={"en": "Standard", "ru": "Стандартный"}, first_response_hours=24
            )
        }
    )
    default_level: str = "standard"
    senders: tuple[SenderLevel, ...] = ()

    def cross_check(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Level names used must be defined: (location in the YAML, problem)."""
        used: list[tuple[tuple[str | int, ...], str]] = [
            (("default_level",), self.default_level),
            *((("senders", i, "level"), s.level) for i, s in enumerate(self.senders)),
        ]
        defined = ", ".join(self.levels) or "none"
        return [
            (loc, f"unknown SLA level {name!r}; defined: {defined}")
            for loc, name in used
            if name not in self.levels
        ]

    def level_for(self, mail: InboundMail, rule_level: str | None = None) -> str:
        """The sender's registered level, else a rule's choice, else the default."""
        domain = mail.from_addr.rpartition("@")[2]
        for entry in self.senders:
            if mail.from_addr in {a.lower() for a in entry.from_address} or any(
                domain == d.lower() or domain.endswith("." + d.lower()) for d in entry.from_domain
            ):
                return entry.level
        if rule_level in self.levels:
            return rule_level
        return self.default_level

    def first_response_due(self, level: str, created: datetime) -> datetime:
        return created + timedelta(hours=self.levels[level].first_response_hours)


BUILTIN = "the built-in level 'standard' (first answer within 24 h)"


def load_sla(path: Path) -> SlaConfig:
    """sla.yaml when present, else the built-in single 'standard' level."""
    if not path.exists():
        return SlaConfig()
    data = load_yaml(path)
    config = validate(SlaConfig, data, path)
    problems = config.cross_check()
    if problems:
        raise ConfigError(
            [
                f"{path}:{line_of(data, loc)}: {'.'.join(map(str, loc))}: {msg}"
                for loc, msg in problems
            ]
        )
    return config


def builtin_note(path: Path) -> str | None:
    """When sla.yaml is missing or empty, say so (it falls back to the built-in level)."""
    if not path.exists():
        return f"{path}: not found; every ticket gets {BUILTIN}"
    if load_yaml(path) is None:
        return f"{path}: empty; every ticket gets {BUILTIN}"
    return None
