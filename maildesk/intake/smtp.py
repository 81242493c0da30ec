"""The SMTP listener: aiosmtpd owns the protocol; this handler owns the policy."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from maildesk.core.replytoken import base_address

if TYPE_CHECKING:  # the intake process imports this module: nothing heavy at run time
    from maildesk.intake.spool_writer import SpoolWriter
    from maildesk.metrics import Metrics

log = logging.getLogger(__name__)

OK = "250 2.0.0 OK"
REFUSED_RCPT = "550 5.1.1 <{}>: recipient not accepted here (not a support address)"
TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
MAX_RCPT = 100  # per transaction, as Postfix (smtpd_recipient_limit is 1000; we need few)
TEMP_FAILURE = "451 4.3.0 Temporary failure storing the message; please retry"
SHUTTING_DOWN = "421 4.3.2 maildesk shutting down; please retry later"


class IntakeHandler:
    """Accept mail for the support addresses only; answer 250 once it is durably spooled."""

    def __init__(
        self,
        spool: SpoolWriter,
        support_addresses: tuple[str, ...],
        metrics: Metrics | None = None,
    ) -> None:
        self._spool = spool
        self._metrics = metrics
        self._accepted = frozenset(a.lower() for a in support_addresses)
        self.closing = False  # set at shutdown: no new transactions

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.closing:
            return SHUTTING_DOWN
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RCPT:
            return TOO_MANY_RCPT
        if base_address(address) not in self._accepted:
            return REFUSED_RCPT.format(address.replace(">", ""))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        raw: Any = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:  # durable in the spool file; the database and the pipeline come after
            key = await self._spool.write(
                bytes(raw), "smtp", envelope.mail_from, tuple(envelope.rcpt_tos)
            )
        except Exception as exc:
            log.error("smtp: could not store mail from %s: %s", envelope.mail_from, exc)
            return TEMP_FAILURE
        if self._metrics:
            self._metrics.accepted.labels("smtp").inc()
        return f"{OK} queued as {key}"


class IntakeSMTP(SMTP):
    """RFC 5321 caps lines at 1,000 octets, but real senders (HTML mailers, spam, bad
    clients) exceed it; refusing would bounce a customer's mail. Postfix accepts such
    lines too. Keep them byte for byte; the message size limit still bounds the total."""

    line_length_limit = 1024 * 1024
    sessions: set[IntakeSMTP] | None = None

    def connection_lost(self, error: Exception | None) -> None:
        if self.sessions is not None:
            self.sessions.discard(self)
        super().connection_lost(error)


class _Refuse(asyncio.Protocol):
    """A connection that arrives while shutting down: 421 as the greeting, then close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(SHUTTING_DOWN.encode() + b"\r\n")
        transport.close()


class SmtpSessions:
    """The protocol factory for the listener; knows its live sessions, so that a
    shutdown can let the transactions in flight finish and refuse the rest."""

    def __init__(self, handler: IntakeHandler, max_message_bytes: int, hostname: str) -> None:
        self.handler = handler
        self._max = max_message_bytes
        self._hostname = hostname
        self._live: set[IntakeSMTP] = set()

    def __call__(self) -> asyncio.BaseProtocol:
        if self.handler.closing:
            return _Refuse()
        proto = IntakeSMTP(
            self.handler,
            data_size_limit=self._max,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self._hostname,
            ident="maildesk ESMTP",
        )
        proto.sessions = self._live
        self._live.add(proto)
        return proto

    def in_flight(self) -> int:
        """Sessions inside a transaction (MAIL FROM given, DATA not yet answered)."""
        return sum(
            1 for p in self._live if p.envelope is not None and p.envelope.mail_from is not None
        )

    async def drain(self, timeout: float) -> int:
        """Refuse new transactions, wait for those in flight (up to `timeout`), then
        close every session. Returns how many transactions were cut off."""
        self.handler.closing = True
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cut = self.in_flight()
        for proto in list(self._live):
            if proto.transport is not None:
                proto.transport.close()
        return cut
