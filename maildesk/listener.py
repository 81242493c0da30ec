"""The SMTP listener: aiosmtpd owns the protocol; this handler owns the policy."""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from maildesk.metrics import Metrics
from maildesk.replytoken import base_address
from maildesk.spool import Spool

log = logging.getLogger(__name__)

OK = "250 2.0.0 OK"
REFUSED_RCPT = "550 5.1.1 <{}>: recipient not accepted here (not a support address)"
TEMP_FAILURE = "451 4.3.0 Temporary failure storing the message; please retry"


class IntakeHandler:
    """Accept mail for the support addresses only; answer 250 once it is durably spooled."""

    def __init__(
        self, spool: Spool, support_addresses: tuple[str, ...], metrics: Metrics | None = None
    ) -> None:
        self._spool = spool
        self._metrics = metrics
        self._accepted = frozenset(a.lower() for a in support_addresses)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if base_address(address) not in self._accepted:
            return REFUSED_RCPT.format(address.replace(">", ""))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        raw: Any = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            inbound_id = await self._spool.accept(
                bytes(raw), "smtp", envelope.mail_from, tuple(envelope.rcpt_tos)
            )
        except Exception as exc:
            log.error("smtp: could not store mail from %s: %s", envelope.mail_from, exc)
            return TEMP_FAILURE
        if self._metrics:
            self._metrics.accepted.labels("smtp").inc()
        return f"{OK} queued as {inbound_id}"


class IntakeSMTP(SMTP):
    """RFC 5321 caps lines at 1,000 octets, but real senders (HTML mailers, spam, bad
    clients) exceed it; refusing would bounce a customer's mail. Postfix accepts such
    lines too. Keep them byte for byte; the message size limit still bounds the total."""

    line_length_limit = 1024 * 1024


def make_smtp_factory(handler: IntakeHandler, max_message_bytes: int, hostname: str) -> Any:
    def factory() -> SMTP:
        return IntakeSMTP(
            handler,
            data_size_limit=max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="maildesk ESMTP",
        )

    return factory
