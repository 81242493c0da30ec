"""Customers at internationalised domains (пример.рф): what compose writes for them is
an address every reader takes, the domain in ASCII (IDNA), a Cyrillic local part as
UTF-8 (RFC 6532), never an encoded word, and a mail is composed whatever the name."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from maildesk.core.address import ascii_domain
from maildesk.core.compose import OutgoingMail, compose
from maildesk.core.parse import parse_mail
from maildesk.core.render import RenderedMail

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _compose(to: str, from_addr: str = "support@example.org", from_name: str = "Support") -> (
    OutgoingMail
):
    out = compose(from_addr=from_addr, from_name=from_name, to=[to], subject="Заказ 17",
                  body=RenderedMail("Здравствуйте", "<p>Здравствуйте</p>"), now=NOW)
    assert out.recipients == (to,)  # the outbox keeps the address as the customer wrote it
    return out


def _read(out: OutgoingMail) -> email.message.EmailMessage:
    message = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.mark.parametrize(
    ("address", "ascii_form"),
    [
        ("ivan@пример.рф", "ivan@xn--e1afmkfd.xn--p1ai"),
        ("Ivan@Пример.РФ", "Ivan@xn--e1afmkfd.xn--p1ai"),  # UTS #46 maps the case
        ("иван@пример.рф", "иван@xn--e1afmkfd.xn--p1ai"),  # the local part needs SMTPUTF8
        ("ann@example.org", "ann@example.org"),
        ("ann@xn--e1afmkfd.xn--p1ai", "ann@xn--e1afmkfd.xn--p1ai"),
        ("ann@bad\u200d.рф", "ann@bad\u200d.рф"),  # IDNA refuses it: left as it is
    ],
)
def test_the_domain_goes_in_ascii(address: str, ascii_form: str) -> None:
    assert ascii_domain(address) == ascii_form


def test_a_customer_at_an_idn_domain_is_written_as_an_address() -> None:
    out = _compose("ivan@пример.рф")
    message = _read(out)
    assert message["To"].addresses[0].addr_spec == "ivan@xn--e1afmkfd.xn--p1ai"
    assert not message["To"].defects
    assert out.raw.isascii()  # any relay takes it


def test_a_cyrillic_local_part_is_utf8_in_the_header_not_an_encoded_word() -> None:
    out = _compose("иван@пример.рф")
    head = out.raw.partition(b"\r\n\r\n")[0]
    assert "\r\nTo: иван@xn--e1afmkfd.xn--p1ai\r\n".encode() in head
    # read back the way maildesk reads an inbound mail: the same address
    assert parse_mail(out.raw).to == ("иван@xn--e1afmkfd.xn--p1ai",)


@pytest.mark.parametrize("name", ["Support", "Служба поддержки", "Doe, John"])
def test_our_own_idn_address_with_any_display_name(name: str) -> None:
    message = _read(_compose("ann@example.org", from_addr="help@компания.рф", from_name=name))
    sender = message["From"].addresses[0]
    assert sender.addr_spec == "help@xn--80aqeigdi5k.xn--p1ai"
    assert sender.display_name == name
