"""Drain the outbox table to the relay (or a Maildir), with retries and backoff.

Rows are claimed with a lease (next_attempt_at pushed ahead, FOR UPDATE SKIP
LOCKED on PostgreSQL) so several instances never send the same row at once; a
row is marked sent only after the relay accepted it, so a crash in between
means it is sent again, never lost (at least once, recorded once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mailbox
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlparse

import aiosmtplib
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from maildesk.errors import ConfigError, PermanentError, TransientError
from maildesk.metrics import Metrics
from maildesk.models import Outbox

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # a crashed sender's rows are retried after this
BATCH = 50


class Transport(Protocol):
    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None: ...


class MaildirTransport:
    """Development default: every outbound mail lands in a Maildir (open it in any client).

    Delivered the Maildir way, durably: write to tmp/, fsync, rename into new/.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(str(path), create=True)  # creates cur/ new/ tmp/
        self._count = itertools.count()

    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        await asyncio.to_thread(self._deliver, raw)

    def _deliver(self, raw: bytes) -> None:
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self._count)}.{socket.gethostname()}"
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, self.path / "new" / name)
        fd = os.open(self.path / "new", os.O_RDONLY)
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
        try:
            errors, _ = await aiosmtplib.send(
                raw,
                sender=mail_from,
                recipients=recipients,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                use_tls=self.tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            text = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
            if all(500 <= c < 600 for c in codes):
                raise PermanentError(text) from None
            raise TransientError(text) from None
        except aiosmtplib.SMTPResponseException as exc:
            text = f"{exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentError(text) from None
            raise TransientError(text) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        if errors:  # some recipients refused, others accepted
            refused = "; ".join(f"{r}: {c} {m}" for r, (c, m) in errors.items())
            log.warning("outbox: relay refused some recipients: %s", refused)


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


def release_claims(engine: Engine) -> int:
    """At start of a single-instance (SQLite) daemon: rows a crashed run had claimed
    are due again now, instead of after the lease."""
    with Session(engine) as session:
        rows = session.exec(
            select(Outbox).where(
                Outbox.status == "queued", col(Outbox.next_attempt_at) > datetime.now(UTC)
            )
        ).all()
        for row in rows:
            row.next_attempt_at = datetime.now(UTC)
            session.add(row)
        session.commit()
        return len(rows)


@dataclass
class FlushStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0


class OutboxSender:
    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        max_attempts: int = 30,
        backoff: float = 5.0,
        backoff_max: float = 1800.0,
        metrics: Metrics | None = None,
        return_path: Callable[[int], str] | None = None,
    ) -> None:
        """`return_path(outbox id)`: the envelope sender (VERP), so a delivery report
        can be matched to the mail it is about (maildesk.replytoken.bounce_address)."""
        self._metrics = metrics
        self._return_path = return_path
        self._engine = engine
        self._transport = transport
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.wake = asyncio.Event()

    async def run_forever(self, idle_seconds: float = 2.0) -> None:
        while True:
            self.wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("outbox: flush failed; retrying shortly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=idle_seconds)

    async def flush(self) -> FlushStats:
        stats = FlushStats()
        while True:
            claimed = await asyncio.to_thread(self._claim)
            if not claimed:
                return stats
            for row_id, mail_from, recipients, raw, attempts in claimed:
                try:
                    await self._transport.send(mail_from, recipients, raw)
                except PermanentError as exc:
                    await asyncio.to_thread(self._finish, row_id, "failed", str(exc), attempts + 1)
                    log.error("outbox %s: relay refused permanently: %s", row_id, exc)
                    stats.failed += 1
                    self._count("failed")
                except TransientError as exc:
                    await asyncio.to_thread(self._retry, row_id, str(exc), attempts + 1)
                    stats.retried += 1
                    self._count("retry")
                else:
                    await asyncio.to_thread(self._finish, row_id, "sent", None, attempts + 1)
                    stats.sent += 1
                    self._count("sent")
            if stats.retried:  # the relay is struggling: leave the rest for the next round
                return stats

    def _count(self, result: str) -> None:
        if self._metrics:
            self._metrics.sent.labels(result).inc()

    def _claim(self) -> list[tuple[int, str, list[str], bytes, int]]:
        now = datetime.now(UTC)
        with Session(self._engine) as session:
            rows = session.exec(
                select(Outbox)
                .where(Outbox.status == "queued", col(Outbox.next_attempt_at) <= now)
                .order_by(col(Outbox.id))
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            claimed = []
            for row in rows:
                assert row.id is not None
                row.next_attempt_at = now + LEASE
                session.add(row)
                mail_from = self._return_path(row.id) if self._return_path else row.mail_from
                claimed.append(
                    (row.id, mail_from, list(row.recipients), bytes(row.raw), row.attempts)
                )
            session.commit()
        return claimed

    def _finish(self, row_id: int, status: str, error: str | None, attempts: int) -> None:
        with Session(self._engine) as session:
            row = session.get(Outbox, row_id)
            if row is None:
                return
            row.status, row.last_error, row.attempts = status, error, attempts
            if status == "sent":
                row.sent_at = datetime.now(UTC)
            session.add(row)
            session.commit()

    def _retry(self, row_id: int, error: str, attempts: int) -> None:
        if attempts >= self.max_attempts:
            self._finish(row_id, "failed", f"gave up after {attempts} attempts: {error}", attempts)
            log.error("outbox %s: gave up after %d attempts: %s", row_id, attempts, error)
            return
        delay = min(self.backoff * 2 ** (attempts - 1), self.backoff_max)
        delay *= random.uniform(0.8, 1.2)
        with Session(self._engine) as session:
            row = session.get(Outbox, row_id)
            if row is None:
                return
            row.attempts, row.last_error = attempts, error
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
            session.add(row)
            session.commit()
        log.warning(
            "outbox %s: attempt %d failed (%s); next in %.0f s", row_id, attempts, error, delay
        )
