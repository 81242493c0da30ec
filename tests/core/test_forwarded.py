"""The customer inside a staff member's forward (for #new-for), as mail clients write it."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from maildesk.core.forwarded import find_forwarded
from maildesk.core.parse import parse_mail

GMAIL = """Please open this for her.

---------- Forwarded message ---------
From: Ann Customer <ann@example.org>
Date: Mon, 23 Nov 2026 at 10:00
Subject: Printer on fire
To: alice@example.com

Hello, my printer is on fire.
"""
OUTLOOK = """FYI

________________________________
From: Ann Customer [mailto:ann@example.org]
Sent: Monday, November 23, 2026 10:00 AM
To: Alice
Subject: RE: Printer on fire

Hello, my printer is on fire.
"""
OUTLOOK_OLD = """-----Original Message-----
From: "Customer, Ann" <ann@example.org>
Sent: Monday, November 23, 2026 10:00 AM
Subject: Printer on fire

Hello, my printer is on fire.
"""
RUSSIAN = """Заведите, пожалуйста.

-------- Пересылаемое сообщение --------
От: Анна Петрова <anna.petrova@yandex.ru>
Дата: 23.11.2026 10:00
Тема: Не приходит счёт
Кому: alice@example.com

Не приходит счёт за ноябрь.
"""
APPLE = """Begin forwarded message:

> From: Ann Customer <ann@example.org>
> Subject: Printer on fire
> Date: 23 November 2026 at 10:00:00 CET
>
> Hello, my printer is on fire.
"""


def staff_mail(body: str, attach: EmailMessage | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "support@localhost"
    msg["Subject"] = "Fwd: Printer on fire"
    msg["Message-ID"] = "<fwd@example.com>"
    msg.set_content(body)
    if attach is not None:
        msg.add_attachment(attach)  # message/rfc822, as mail clients forward "as attachment"
    return msg.as_bytes()


@pytest.mark.parametrize(("body", "address", "subject", "text"), [
    (GMAIL, "ann@example.org", "Printer on fire", "Hello, my printer is on fire."),
    (OUTLOOK, "ann@example.org", "Printer on fire", "Hello, my printer is on fire."),
    (OUTLOOK_OLD, "ann@example.org", "Printer on fire", "Hello, my printer is on fire."),
    (RUSSIAN, "anna.petrova@yandex.ru", "Не приходит счёт", "Не приходит счёт за ноябрь."),
    (APPLE, "ann@example.org", "Printer on fire", "Hello, my printer is on fire."),
])
def test_inline_forwards(body: str, address: str, subject: str, text: str) -> None:
    found = find_forwarded(parse_mail(staff_mail(body)))
    assert found is not None
    assert (found.address, found.subject, found.text) == (address, subject, text)


def test_forward_as_attachment() -> None:
    inner = EmailMessage()
    inner["From"] = "Ann Customer <ann@example.org>"
    inner["Subject"] = "Printer on fire"
    inner.set_content("Hello, my printer is on fire.")
    found = find_forwarded(parse_mail(staff_mail("See attached.", inner)))
    assert found is not None and found.address == "ann@example.org"
    assert found.name == "Ann Customer" and found.text == "Hello, my printer is on fire."


@pytest.mark.parametrize("body", [
    "No forward here.\nFrom: ann@example.org\n",  # a From: line without a separator
    "---------- Forwarded message ---------\nFrom: =?utf-8?q?x@evil.test?= <>\n\nHi\n",
    '-----Original Message-----\nFrom: <"a,b"@evil.test>\n\nHi\n',  # not a usable address
])
def test_no_customer_when_there_is_none_or_it_is_unusable(body: str) -> None:
    assert find_forwarded(parse_mail(staff_mail(body))) is None
