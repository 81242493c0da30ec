"""Where the outbox delivers: a relay over SMTP (aiosmtplib), or a Maildir a person can
open in any mail client (the embedded default). MAILDESK_OUTBOUND picks one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import mailbox
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlparse

import aiosmtplib

from maildesk.core.address import ascii_domain
from maildesk.errors import ConfigError, PermanentError, TransientError

log = logging.getLogger("maildesk.work.outbox")

# Through a relay, a crash between sending and recording sends the batch again: keep the
# mails in flight few.
SMTP_BATCH = 10


class Transport(Protocol):
    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None: ...


@runtime_checkable
class BatchTransport(Protocol):
    """A transport that delivers a batch durably at once (one sync of the batch), and
    only once per key: a batch delivered again after a crash adds nothing."""

    async def send_many(self, mails: Sequence[tuple[str, bytes]]) -> None: ...


class MaildirTransport:
    """Development default: every outbound mail lands in a Maildir (open it in any client).

    Delivered the Maildir way, durably: write to tmp/, fsync, rename into new/, fsync
    new/. A batch shares the directory fsync, and each mail is named after its key
    (the outbox Message-ID): delivering it again, as after a crash between delivery
    and recording it sent, finds it in new/ and does not add a second copy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(str(path), create=True)  # creates cur/ new/ tmp/
        self._count = itertools.count()
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self._count)}.{self._host}"
        await asyncio.to_thread(self._deliver, [(name, raw)])

    async def send_many(self, mails: Sequence[tuple[str, bytes]]) -> None:
        named = [(self._name(key), raw) for key, raw in mails]
        await asyncio.to_thread(self._deliver, named)

    def _name(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"maildesk-{digest}.{self._host}"

    def _deliver(self, mails: Sequence[tuple[str, bytes]]) -> None:
        new = self.path / "new"
        moved = False
        for name, raw in mails:
            if (new / name).exists():
                continue  # delivered before, not recorded: a crash came in between
            tmp = self.path / "tmp" / name
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, new / name)
            moved = True
        if moved:
            fd = os.open(new, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False
    timeout: float = 30.0

    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        """One mail on a connection of its own."""
        async with self.session() as relay:
            await relay.send(mail_from, recipients, raw)

    def session(self) -> RelaySession:
        return RelaySession(self)

    def new_client(self) -> aiosmtplib.SMTP:
        """A client for one connection (connect() does STARTTLS and the login)."""
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.starttls,
            use_tls=self.tls,
            timeout=self.timeout,
        )


@runtime_checkable
class SessionTransport(Protocol):
    """A transport that sends a batch over one connection (`async with t.session() as s`,
    then `s.send(...)` for each mail)."""

    def session(self) -> RelaySession: ...


class RelaySession:
    """One connection to the relay for a batch of mails, so one TLS handshake and one
    login instead of one per mail: opened at the first mail, opened again after the
    relay drops it, closed with QUIT at the end. A mail the relay refuses leaves the
    connection usable (aiosmtplib resets the envelope)."""

    def __init__(self, relay: SmtpTransport) -> None:
        self._relay = relay
        self._client: aiosmtplib.SMTP | None = None
        self._unreachable: str | None = None  # why the relay took no connection

    async def __aenter__(self) -> RelaySession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):  # the mails are sent: a failed QUIT is no matter
                await client.quit()
        if client is not None:
            client.close()

    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        """Domains go in ASCII (IDNA), as in the mail's headers; a UTF-8 local part asks
        the relay for SMTPUTF8, and a relay without it refuses that mail for good."""
        sender, rcpts = ascii_domain(mail_from), [ascii_domain(r) for r in recipients]
        utf8 = [a for a in (sender, *rcpts) if not a.isascii()]
        if not raw.partition(b"\r\n\r\n")[0].isascii():
            utf8.append("a UTF-8 address in its header")
        client = await self._connected()
        try:
            errors, _ = await client.sendmail(
                sender, rcpts, raw, mail_options=["SMTPUTF8"] if utf8 else None
            )
        except aiosmtplib.SMTPNotSupported as exc:
            if utf8 and "SMTPUTF8" in str(exc):
                raise PermanentError(f"{exc} (needed for {', '.join(utf8)})") from None
            raise self._dropped(exc) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            text = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
            if all(500 <= c < 600 for c in codes):
                raise PermanentError(text) from None
            raise TransientError(text) from None
        except aiosmtplib.SMTPResponseException as exc:
            text = _reason(exc)
            if 500 <= exc.code < 600:
                raise PermanentError(text) from None
            if exc.code == 421:  # the relay is closing this connection
                self._drop()
            raise TransientError(text) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise self._dropped(exc) from None
        if errors:  # some recipients refused, others accepted
            refused = "; ".join(f"{r}: {c} {m}" for r, (c, m) in errors.items())
            log.warning("outbox: relay refused some recipients: %s", refused)

    async def _connected(self) -> aiosmtplib.SMTP:
        """The open connection, or a new one. A relay that takes none (down, a greeting
        or login it refuses: 554, 535) is the relay's fault or the settings', never the
        mail's: every mail of the batch waits for the next round, with the reason, and
        the batch does not try again (a relay that drops packets would cost a timeout
        per mail)."""
        if self._unreachable is not None:
            raise TransientError(self._unreachable)
        if self._client is None or not self._client.is_connected:
            self._drop()
            client = self._relay.new_client()
            try:
                await client.connect()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                client.close()
                self._unreachable = f"the relay took no connection: {_reason(exc)}"
                log.error("outbox: %s:%d: %s (MAILDESK_OUTBOUND)", self._relay.host,
                          self._relay.port, self._unreachable)
                raise TransientError(self._unreachable) from None
            self._client = client
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _dropped(self, exc: BaseException) -> TransientError:
        """The connection is not to be trusted after this: the next mail opens another."""
        self._drop()
        return TransientError(_reason(exc))


def _reason(exc: BaseException) -> str:
    """How an error of the relay reads in the outbox's last_error and the log."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def transport_from_url(url: str) -> Transport:
    """`maildir:PATH`, `smtp://user:pass@host:587?starttls=1`, `smtps://host:465`."""
    if url.startswith("maildir:"):
        return MaildirTransport(Path(url.removeprefix("maildir:")))
    transport = check_outbound_url(url)
    assert transport is not None
    return transport


def check_outbound_url(url: str) -> SmtpTransport | None:
    """Parse MAILDESK_OUTBOUND without touching anything; a ConfigError names it."""
    if url.startswith("maildir:"):
        if not url.removeprefix("maildir:"):
            raise ConfigError("MAILDESK_OUTBOUND: maildir: needs a path (maildir:/srv/sent)")
        return None
    parsed = urlparse(url)
    shown = _redact(url)
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
        raise ConfigError(
            f"MAILDESK_OUTBOUND: expected maildir:PATH or smtp://host:port, got {shown!r}"
        )
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError(
            f"MAILDESK_OUTBOUND: the port is not a number 1-65535 in {shown!r}"
        ) from None
    query = parse_qs(parsed.query)
    unknown = sorted(set(query) - {"starttls"})
    if unknown:
        raise ConfigError(f"MAILDESK_OUTBOUND: unknown option {unknown[0]!r} (known: starttls)")
    return SmtpTransport(
        host=parsed.hostname,
        port=port or (465 if parsed.scheme == "smtps" else 25),
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        tls=parsed.scheme == "smtps",
    )


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)
