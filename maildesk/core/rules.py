"""rules.yaml: the staff roster, groups, and auto-assignment rules (pure)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maildesk.core.parse import InboundMail

Priority = Literal["low", "normal", "high", "urgent"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaffMember(_Strict):
    name: str
    email: str
    groups: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en",)
    admin: bool = False

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        value = value.strip().lower()
        local, _, domain = value.partition("@")
        if not local or not domain or any(c.isspace() for c in value):
            raise ValueError(f"not an email address: {value!r}")
        return value


class Group(_Strict):
    strategy: Literal["round_robin", "least_open"] = "round_robin"
    lead: str | None = None  # staff email: SLA escalations with `notify: group_lead`


class When(_Strict):
    subject_matches: str | None = None
    body_matches: str | None = None
    from_address: tuple[str, ...] = ()
    from_domain: tuple[str, ...] = ()
    from_domain_not: tuple[str, ...] = ()
    to_address: tuple[str, ...] = ()

    @field_validator("subject_matches", "body_matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("from_address", "from_domain", "from_domain_not", "to_address", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Then(_Strict):
    assign_group: str | None = None
    assign: str | None = None  # staff email
    category: str | None = None
    priority: Priority | None = None
    sla: str | None = None
    notify: tuple[str, ...] = ()


class Rule(_Strict):
    name: str
    when: When = Field(default_factory=When)
    then: Then
    stop: bool = False


class Defaults(_Strict):
    assign_group: str | None = None
    assign: str | None = None
    priority: Priority = "normal"
    category: str = "general"


class CustomerUpdates(_Strict):
    """Which ticket changes the requester is told about by mail."""

    assigned: bool = True  # "Alice is handling your request" (#assign, not the first pick)
    resolved: bool = True  # with the whole public correspondence and a rating request
    closed: bool = True
    reopened: bool = True

    def enabled(self) -> frozenset[str]:
        return frozenset(name for name, on in self.model_dump().items() if on)


class RulesConfig(_Strict):
    staff: tuple[StaffMember, ...] = ()
    groups: dict[str, Group] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    defaults: Defaults = Field(default_factory=Defaults)
    customer_updates: CustomerUpdates = Field(default_factory=CustomerUpdates)

    def cross_check(
        self, sla_levels: Collection[str] | None = None
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Names that must refer to each other: (location in the YAML, problem)."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if not self.staff:
            problems.append(
                (
                    ("staff",),
                    "no staff: tickets would have no assignee and nobody would be notified",
                )
            )
        emails = [s.email for s in self.staff]
        for i, member in enumerate(self.staff):
            if emails.index(member.email) != i:
                problems.append((("staff", i, "email"), f"{member.email} is listed twice"))
            for group in member.groups:
                if group not in self.groups:
                    problems.append((("staff", i, "groups"), f"unknown group {group!r}"))
        for name, spec in self.groups.items():
            if spec.lead is not None and spec.lead.lower() not in emails:
                problems.append((("groups", name, "lead"), f"{spec.lead!r} is not in staff"))
        targets: list[tuple[tuple[str | int, ...], str | None, str | None]] = [
            (("rules", i, "then"), r.then.assign_group, r.then.assign)
            for i, r in enumerate(self.rules)
        ]
        targets.append((("defaults",), self.defaults.assign_group, self.defaults.assign))
        for loc, target_group, person in targets:
            if target_group is not None and target_group not in self.groups:
                known = ", ".join(self.groups) or "none defined"
                problems.append(
                    ((*loc, "assign_group"), f"unknown group {target_group!r} (groups: {known})")
                )
            if person is not None and person.lower() not in emails:
                problems.append(((*loc, "assign"), f"{person!r} is not in staff"))
        for i, rule in enumerate(self.rules):
            for j, address in enumerate(rule.then.notify):
                if address.lower() not in emails:
                    problems.append(
                        (("rules", i, "then", "notify", j), f"{address!r} is not in staff")
                    )
            level = rule.then.sla
            if sla_levels is not None and level is not None and level not in sla_levels:
                known = ", ".join(sla_levels) or "none defined"
                problems.append(
                    (
                        ("rules", i, "then", "sla"),
                        f"unknown SLA level {level!r} (sla.yaml defines: {known})",
                    )
                )
        return problems

    def member(self, address: str) -> StaffMember | None:
        address = address.lower()
        return next((s for s in self.staff if s.email == address), None)

    @property
    def admins(self) -> tuple[StaffMember, ...]:
        return tuple(s for s in self.staff if s.admin)

    def members_of(self, group: str) -> tuple[StaffMember, ...]:
        return tuple(s for s in self.staff if group in s.groups)


@dataclass(frozen=True)
class RuleResult:
    """What the rules decided for a new ticket, and which rules fired."""

    group: str | None
    assignee: str | None
    priority: str
    category: str
    sla: str | None
    notify: tuple[str, ...]
    fired: tuple[str, ...]


def _matches(when: When, mail: InboundMail) -> bool:
    domain = mail.from_addr.rpartition("@")[2]
    checks = [
        when.subject_matches is None or re.search(when.subject_matches, mail.subject) is not None,
        when.body_matches is None or re.search(when.body_matches, mail.text) is not None,
        not when.from_address or mail.from_addr in {a.lower() for a in when.from_address},
        not when.from_domain or _in_domains(domain, when.from_domain),
        not when.from_domain_not or not _in_domains(domain, when.from_domain_not),
        not when.to_address or bool({a.lower() for a in when.to_address} & set(mail.to + mail.cc)),
    ]
    return all(checks)


def _in_domains(domain: str, domains: tuple[str, ...]) -> bool:
    return any(domain == d.lower() or domain.endswith("." + d.lower()) for d in domains)


def evaluate(config: RulesConfig, mail: InboundMail) -> RuleResult:
    """Apply matching rules in order, each setting what it names (a later rule overrides
    an earlier one, as in a list read top to bottom); `stop: true` ends the list."""
    group: str | None = None
    assignee: str | None = None
    priority: str | None = None
    category: str | None = None
    sla: str | None = None
    notify: list[str] = []
    fired: list[str] = []
    for rule in config.rules:
        if not _matches(rule.when, mail):
            continue
        fired.append(rule.name)
        then = rule.then
        if then.assign_group or then.assign:
            group, assignee = then.assign_group, then.assign.lower() if then.assign else None
        priority = then.priority or priority
        category = then.category or category
        sla = then.sla or sla
        notify.extend(n.lower() for n in then.notify)
        if rule.stop:
            break
    d = config.defaults
    if assignee is None and group is None:
        assignee = d.assign.lower() if d.assign else None
        group = d.assign_group
    return RuleResult(
        group=group,
        assignee=assignee,
        priority=priority or d.priority,
        category=category or d.category,
        sla=sla,
        notify=tuple(dict.fromkeys(notify)),
        fired=tuple(fired),
    )


def pick_assignee(
    config: RulesConfig,
    group: str,
    open_counts: Mapping[str, int],
    last_assigned: str | None,
) -> str | None:
    """Choose a group member by the group's strategy; None when the group is empty."""
    members = [m.email for m in config.members_of(group)]
    if not members:
        return None
    if config.groups[group].strategy == "least_open":
        return min(members, key=lambda e: (open_counts.get(e, 0), members.index(e)))
    if last_assigned in members:
        return members[(members.index(last_assigned) + 1) % len(members)]
    return members[0]
