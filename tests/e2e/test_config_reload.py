"""Invariant 6: a bad edit of rules.yaml never takes the running daemon down."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_for
from tests.mailkit import mails_to, make_mail, send


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_reload_keeps_last_good_config_and_tells_admins(  # type: ignore[no-untyped-def]
    start_daemon, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", rules)
    d = start_daemon(MAILDESK_RULES=str(rules))
    data = Path(d.env["MAILDESK_DATA_DIR"])

    rules.write_text(rules.read_text().replace("strategy: least_open", "strategy: random"))
    admin_mail = wait_for(lambda: mails_to(data, "bob@example.com"), timeout=30)[0]
    assert "configuration change refused" in str(admin_mail["Subject"])
    assert f"{rules}:9: groups.billing.strategy" in admin_mail.get_body(("plain",)).get_content()
    assert f"{rules}:9: groups.billing.strategy" in d.log()

    # still running on the last good rules: mail flows, assignment still works
    send(d.port, make_mail(sender="after@example.org", subject="After the bad edit"))
    wait_for(lambda: mails_to(data, "after@example.org"))
    assert d.scalar("select assignee from ticket") in ("alice@example.com", "bob@example.com")

    # a good edit is picked up: a new staff member gets the next round-robin ticket
    rules.write_text(
        (REPO / "rules.yaml")
        .read_text()
        .replace("staff:\n", "staff:\n  - {name: Carol, email: carol@example.com, groups: [l1]}\n")
    )
    wait_for(lambda: "config reloaded" in d.log(), timeout=30)
    for i in range(3):
        send(d.port, make_mail(sender=f"n{i}@example.org", subject=f"New {i}"))
    wait_for(lambda: d.scalar("select count(*) from ticket") == 4)
    assert d.scalar("select count(*) from ticket where assignee = 'carol@example.com'") >= 1
