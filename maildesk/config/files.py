"""rules.yaml, sla.yaml and the templates read from disk: parsed with line numbers,
validated, and every mistake reported as file:line (the core holds only the types)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from maildesk.config.yamlfile import line_of, load_yaml, validate
from maildesk.core.render import Templates
from maildesk.core.rules import RulesConfig
from maildesk.core.sla import SlaConfig
from maildesk.errors import ConfigError

BUILTIN = "the built-in level 'standard' (first answer within 24 h)"


def load_rules(path: Path, sla_levels: Collection[str] | None = None) -> RulesConfig:
    """rules.yaml, validated; with `sla_levels`, a rule's `sla:` must name one of them."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found (copy rules.yaml from the repository)")
    data = load_yaml(path)
    config = validate(RulesConfig, data, path)
    _refuse(path, data, config.cross_check(sla_levels))
    return config


def load_sla(path: Path) -> SlaConfig:
    """sla.yaml when present, else the built-in single 'standard' level."""
    if not path.exists():
        return SlaConfig()
    data = load_yaml(path)
    config = validate(SlaConfig, data, path)
    _refuse(path, data, config.cross_check())
    return config


def builtin_note(path: Path) -> str | None:
    """When sla.yaml is missing or empty, say so (it falls back to the built-in level)."""
    if not path.exists():
        return f"{path}: not found; every ticket gets {BUILTIN}"
    if load_yaml(path) is None:
        return f"{path}: empty; every ticket gets {BUILTIN}"
    return None


def _refuse(path: Path, data: Any, problems: Sequence[tuple[tuple[int | str, ...], str]]) -> None:
    if problems:
        raise ConfigError(
            [
                f"{path}:{line_of(data, loc)}: {'.'.join(map(str, loc))}: {msg}"
                for loc, msg in problems
            ]
        )


def load_templates(directory: Path) -> Templates:
    """Every .txt and .html under `directory`, read into memory once."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: templates directory not found")
    sources: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in (".txt", ".html"):
            try:
                sources[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read: {exc}")
    if problems:
        raise ConfigError(problems)
    return Templates(directory, sources)
