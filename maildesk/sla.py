"""sla.yaml: SLA levels and which senders get them (pure).

This is the groundwork: levels with first-response and resolution targets in
wall-clock hours. Business-hours calendars are a later issue.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maildesk.parse import InboundMail
from maildesk.yamlfile import load_yaml, validate


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

    @model_validator(mode="after")
    def _known_levels(self) -> SlaConfig:
        for name in [self.default_level, *(s.level for s in self.senders)]:
            if name not in self.levels:
                raise ValueError(f"unknown SLA level {name!r}; defined: {', '.join(self.levels)}")
        return self

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


def load_sla(path: Path) -> SlaConfig:
    """sla.yaml when present, else the built-in single 'standard' level."""
    if not path.exists():
        return SlaConfig()
    return validate(SlaConfig, load_yaml(path), path)
