"""`maildesk ingest`, `check`, `errors` and `db upgrade` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env, maildesk_cli
from tests.mailkit import make_mail


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = base_env(tmp_path / "data", database_url, **extra)
    maildesk_cli(env, "db", "upgrade")
    return env


def test_every_real_world_mime_message_is_stored(
    corpora: Path, tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    files = [p for p in sorted((corpora / "mime").rglob("*")) if p.is_file()]
    result = maildesk_cli(env, "ingest", str(corpora / "mime"))
    assert "Traceback" not in result.stderr, result.stderr
    from sqlalchemy import text

    from maildesk.storage.db import make_engine

    engine = make_engine(env["MAILDESK_DATABASE_URL"])
    with engine.connect() as conn:
        stored = conn.execute(text("select count(*) from inbound")).scalar()
        unfinished = conn.execute(
            text("select count(*) from inbound where status = 'new'")
        ).scalar()
        raws = {bytes(r[0]) for r in conn.execute(text("select raw from inbound"))}
    engine.dispose()
    assert stored == len(files)
    assert unfinished == 0
    # kept byte for byte (an mbox envelope line "From sender date" is not part of the mail)
    for path in files:
        data = path.read_bytes()
        if data.startswith(b"From "):
            data = data.split(b"\n", 1)[1]
        assert data in raws, path
    assert f"{len(files)} processed" in result.stdout


def test_ingest_reads_maildir_and_mbox_and_dedupes(tmp_path: Path) -> None:
    import mailbox

    env = _env(tmp_path, f"sqlite:///{tmp_path / 'md.db'}")
    box = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    mbox = mailbox.mbox(str(tmp_path / "archive.mbox"))
    for i in range(3):
        raw = make_mail(
            sender=f"p{i}@example.org", subject=f"Imported {i}", message_id=f"<imp{i}@example.org>"
        )
        box.add(raw)
        mbox.add(raw)  # the same mails again: duplicates
    mbox.flush()
    result = maildesk_cli(env, "ingest", str(tmp_path / "Maildir"), str(tmp_path / "archive.mbox"))
    assert "6 processed: 3 tickets touched, 3 duplicates" in result.stdout
    listed = json.loads(maildesk_cli(env, "tickets", "--json").stdout)
    assert sorted(t["subject"] for t in listed) == ["Imported 0", "Imported 1", "Imported 2"]


def test_mail_over_the_bounds_is_kept_as_an_error(tmp_path: Path) -> None:
    env = _env(tmp_path, f"sqlite:///{tmp_path / 'md.db'}")
    headers = "".join(f"X-Filler-{i}: {i}\n" for i in range(3000)).encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-huge-header.eml").write_bytes(
        b"From: a@example.org\nTo: support@localhost\nSubject: many headers\n"
        + headers
        + b"\nbody\n"
    )
    deep = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'.encode() for i in range(40)
    )
    (tmp_path / "in" / "b-deep.eml").write_bytes(
        b"From: a@example.org\nTo: support@localhost\nSubject: deep\nMIME-Version: 1.0\n" + deep
    )
    (tmp_path / "in" / "c-normal.eml").write_bytes(make_mail(subject="fine"))
    result = maildesk_cli(env, "ingest", str(tmp_path / "in"))
    assert "3 processed: 1 tickets touched, 0 duplicates, 2 kept as errors" in result.stdout
    errors = json.loads(maildesk_cli(env, "errors", "--json").stdout)
    reasons = sorted(e["error"] for e in errors)
    assert "header section has" in reasons[1] and "limit" in reasons[1]
    assert "MIME nesting deeper than" in reasons[0]


def test_check_reports_file_and_line(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", f"sqlite:///{tmp_path / 'md.db'}")
    maildesk_cli(env, "db", "upgrade")
    assert maildesk_cli(env, "check").returncode == 0

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        (REPO / "rules.yaml")
        .read_text()
        .replace("assign_group: billing,", "assign_group: billling,")
    )
    bad_yaml = tmp_path / "sla.yaml"
    bad_yaml.write_text("levels:\n  standard: {first_response_hours: 4\n")
    templates = tmp_path / "templates"
    import shutil

    shutil.copytree(REPO / "templates", templates)
    (templates / "ru" / "confirmation.txt").write_text("Привет {{ custmer_name }}\n")
    env.update(
        MAILDESK_RULES=str(rules), MAILDESK_SLA=str(bad_yaml), MAILDESK_TEMPLATES=str(templates)
    )
    result = maildesk_cli(env, "check", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{rules}:14: ") and "billling" in line for line in lines), lines
    assert any(line.startswith(f"{bad_yaml}:3:") for line in lines), lines
    assert any(
        line.startswith(f"{templates}/ru/confirmation.txt:1: unknown variable 'custmer_name'")
        for line in lines
    ), lines
    assert "Traceback" not in result.stderr


def test_run_refuses_bad_config_and_old_schema(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", f"sqlite:///{tmp_path / 'md.db'}")
    result = maildesk_cli(env, "run", check=False)  # schema never created
    assert result.returncode == 1
    assert "run `maildesk db upgrade`" in result.stderr and "Traceback" not in result.stderr
    maildesk_cli(env, "db", "upgrade")
    env["MAILDESK_RULES"] = str(tmp_path / "missing.yaml")
    result = maildesk_cli(env, "run", check=False)
    assert result.returncode == 1 and "missing.yaml: file not found" in result.stderr


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1:99999"])
def test_bad_setting_is_one_clear_line(tmp_path: Path, value: str) -> None:
    env = base_env(tmp_path / "data", f"sqlite:///{tmp_path / 'md.db'}", MAILDESK_SMTP_LISTEN=value)
    result = maildesk_cli(env, "check", check=False)
    assert result.returncode == 1
    assert "MAILDESK_SMTP_LISTEN" in result.stderr and "Traceback" not in result.stderr
