"""MAILDESK_IMAP_URL parsing: what each form means, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from maildesk.errors import ConfigError
from maildesk.intake.imap.url import Security, is_loopback, parse_mailboxes


@pytest.mark.parametrize(
    ("url", "host", "port", "user", "password", "folder", "security"),
    [
        (
            "imaps://support%40example.com:s%3Acret@mail.example.com/INBOX",
            "mail.example.com", 993, "support@example.com", "s:cret", "INBOX", Security.TLS,
        ),
        (
            "imap://bob:pw@mail.example.com/Support/Tier%201",
            "mail.example.com", 143, "bob", "pw", "Support/Tier 1", Security.STARTTLS,
        ),
        ("imap://alice:secret@127.0.0.1:1143", "127.0.0.1", 1143, "alice", "secret", "INBOX",
         Security.STARTTLS),
        ("IMAPS://a:b@[::1]:9993/X", "::1", 9993, "a", "b", "X", Security.TLS),
    ],
)
def test_forms(
    url: str, host: str, port: int, user: str, password: str, folder: str, security: Security
) -> None:
    (mb,) = parse_mailboxes(url)
    assert (mb.host, mb.port, mb.username, mb.read_password(), mb.folder) == (
        host, port, user, password, folder,
    )
    assert mb.security_wanted() is security
    assert password not in mb.label and mb.label.startswith(user)


def test_several_mailboxes_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "imap-password"
    secret.write_text("from-file\n")
    boxes = parse_mailboxes("imaps://a@h1/INBOX, imaps://b:inline@h2/Sales", secret)
    assert [(m.username, m.read_password()) for m in boxes] == [("a", "from-file"), ("b", "inline")]
    assert boxes[0].key != boxes[1].key


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://a:b@h/INBOX", "expected imap:// or imaps://"),
        ("imaps://h/INBOX", "no user"),
        ("imaps://a@h/INBOX", "no password for a"),
        ("imaps://a:b@:99/INBOX", "no host"),
        ("imaps://a:b@h:99999/INBOX", "bad port"),
        ("imaps://a:b@h/INBOX?x=1", "unexpected ?query"),
        ("imaps://a:b@h/INBOX,imaps://a:b@h/INBOX", "named twice"),
    ],
)
def test_mistakes_are_one_clear_line(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mailboxes(url)
    text = str(caught.value)
    assert fragment in text and "MAILDESK_IMAP_URL" in text
    assert ":b@" not in text  # never echo a password


def test_missing_password_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILDESK_IMAP_PASSWORD_FILE"):
        parse_mailboxes("imaps://a@h/INBOX", tmp_path / "missing")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("10.0.0.1", False), ("mail.example.com", False)],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
