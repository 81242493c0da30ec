"""Config loading mistakes found with their line; templates fixed at validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maildesk.config.files import builtin_note, load_rules, load_sla, load_templates
from maildesk.core.render import SAMPLE_CONTEXT
from maildesk.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_unknown_default_level_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text(
        (REPO / "sla.yaml").read_text().replace("default_level: standard", "default_level: gold")
    )
    line = path.read_text().splitlines().index("default_level: gold") + 1
    with pytest.raises(ConfigError) as caught:
        load_sla(path)
    assert caught.value.problems == [
        f"{path}:{line}: default_level: unknown SLA level 'gold'; "
        "defined: standard, partner, special"
    ]


def test_unknown_sender_level_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text(
        "levels:\n  standard: {first_response_hours: 8}\n"
        "senders:\n  - {level: standard, from_domain: a.example}\n"
        "  - {level: platinum, from_domain: b.example}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_sla(path)
    assert caught.value.problems[0].startswith(f"{path}:5: senders.1.level: unknown SLA level")


@pytest.mark.parametrize("text", ["", "# nothing here yet\n"])
def test_empty_sla_falls_back_to_the_builtin_level_and_says_so(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sla.yaml"
    path.write_text(text)
    assert list(load_sla(path).levels) == ["standard"]
    note = builtin_note(path)
    assert note is not None and note.startswith(f"{path}: empty;") and "built-in" in note
    assert builtin_note(REPO / "sla.yaml") is None


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("", ":1: staff: no staff"),
        ("# only a comment\n", ":1: staff: no staff"),
        ("staff: []\ndefaults: {priority: high}\n", ":1: staff: no staff"),
        (
            "staff: [{name: A, email: a@x.org}]\nrules:\n  - name: r\n    then: {sla: gold}\n",
            ":4: rules.0.then.sla: unknown SLA level 'gold' (sla.yaml defines: standard, partner)",
        ),
    ],
)
def test_rules_that_would_run_silently_wrong_are_errors(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path, sla_levels=("standard", "partner"))
    assert any(
        p == f"{path}{expected}" or p.startswith(f"{path}{expected}") for p in caught.value.problems
    ), caught.value.problems


def test_a_template_edited_after_validation_does_not_change_what_renders(tmp_path: Path) -> None:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    templates = load_templates(tmp_path / "templates")
    assert templates.check() == []
    before = templates.render("confirmation", "en", SAMPLE_CONTEXT)
    # A broken edit lands while the daemon runs; the reload refuses it ...
    (tmp_path / "templates" / "en" / "confirmation.txt").write_text("{{ no_such_variable }}\n")
    (tmp_path / "templates" / "en" / "confirmation.html").write_text("{% if %}\n")
    assert load_templates(tmp_path / "templates").check() != []
    # ... and the templates of the last good config render as validated.
    assert templates.render("confirmation", "en", SAMPLE_CONTEXT) == before
