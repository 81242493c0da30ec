"""Plain operator mails (admin alerts, cap notices): no template, composed safely. Pure."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from maildesk.core.compose import OutgoingMail, compose
from maildesk.core.render import RenderedMail


def operator_mail(
    from_addr: str, to: Sequence[str], subject: str, lines: Sequence[str], now: datetime
) -> OutgoingMail:
    text = "\n".join(lines) + "\n"
    body = RenderedMail(text=text, html="<pre>" + html.escape(text) + "</pre>")
    return compose(
        from_addr=from_addr,
        from_name="maildesk",
        to=tuple(to),
        subject=subject,
        body=body,
        now=now,
        automatic=True,
    )
