"""MAILDESK_IMAP_URL: one or several mailboxes, parsed once at the edge.

    imaps://support%40example.com:secret@mail.example.com/INBOX   TLS (port 993)
    imap://user@mail.example.com/Support                           STARTTLS (port 143)
    imap://alice:secret@127.0.0.1:1143/INBOX                       plain, loopback only

Several mailboxes are separated by commas. The password may be left out of the
URL and read from MAILDESK_IMAP_PASSWORD_FILE instead (re-read on every
connect, so a corrected password is picked up without a restart).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from maildesk.errors import ConfigError

ENV = "MAILDESK_IMAP_URL"


class Security(StrEnum):
    TLS = "tls"  # imaps://: TLS from the first byte
    STARTTLS = "starttls"  # imap://: upgrade with STARTTLS before login
    PLAIN = "plain"  # imap:// to a loopback server that does not offer STARTTLS


@dataclass(frozen=True)
class Mailbox:
    """One mailbox to poll. `password` is None when it comes from `password_file`."""

    scheme: str
    host: str
    port: int
    username: str
    password: str | None
    password_file: Path | None
    folder: str

    @property
    def label(self) -> str:
        """How logs and health name the mailbox: never with the password."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"

    @property
    def key(self) -> str:
        """The stable name of this mailbox's state in the kv table."""
        label = self.label
        if len(label) > 200:
            label = hashlib.sha256(label.encode()).hexdigest()
        return f"imap:{label}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def security_wanted(self) -> Security:
        return Security.TLS if self.scheme == "imaps" else Security.STARTTLS

    def read_password(self) -> str:
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"MAILDESK_IMAP_PASSWORD_FILE={self.password_file}: {exc.strerror}"
            ) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_mailboxes(value: str, password_file: Path | None = None) -> list[Mailbox]:
    """All mailboxes named in MAILDESK_IMAP_URL; every mistake is reported at once."""
    problems: list[str] = []
    mailboxes: list[Mailbox] = []
    for n, part in enumerate((p.strip() for p in value.split(",")), start=1):
        if not part:
            continue
        try:
            mailboxes.append(parse_mailbox(part, password_file))
        except ConfigError as exc:
            where = f"{ENV} (mailbox {n})" if "," in value else ENV
            problems.extend(f"{where}: {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    seen: set[str] = set()
    for mb in mailboxes:
        if mb.key in seen:
            raise ConfigError(f"{ENV}: mailbox {mb.label} is named twice")
        seen.add(mb.key)
    return mailboxes


def parse_mailbox(url: str, password_file: Path | None = None) -> Mailbox:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("imap", "imaps"):
        raise ConfigError(f"expected imap:// or imaps://, got {_redact(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in {_redact(url)!r}") from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"no host in {_redact(url)!r}")
    username = unquote(parts.username or "")
    if not username:
        raise ConfigError(f"no user in {_redact(url)!r} (imaps://USER:PASSWORD@HOST/FOLDER)")
    password = unquote(parts.password) if parts.password is not None else None
    if password is None and password_file is None:
        raise ConfigError(
            f"no password for {username} in {_redact(url)!r}; put it in the URL "
            "or in the file named by MAILDESK_IMAP_PASSWORD_FILE"
        )
    if password is None and password_file is not None and not password_file.is_file():
        raise ConfigError(f"MAILDESK_IMAP_PASSWORD_FILE={password_file}: no such file")
    if parts.query or parts.fragment:
        raise ConfigError(f"unexpected ?query or #fragment in {_redact(url)!r}")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return Mailbox(
        scheme=scheme,
        host=host,
        port=port or (993 if scheme == "imaps" else 143),
        username=username,
        password=password,
        password_file=password_file if password is None else None,
        folder=folder,
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
