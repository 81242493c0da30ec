"""HMAC tokens in our own addresses (invariant 5). Pure.

- reply tokens: `support+t42.k9f2c0d1e3@host` in the Reply-To of a staff
  notification, bound to one ticket and one staff member;
- bounce tokens (VERP): `support+b17.0a1b2c3d4e@host` as the return path of
  outbound mail 17, so only a delivery report about a mail we really sent
  (to the recipient it names) can suppress automatic mail;
- rating tokens: `support+rate.42.0a1b2c3d4e.good@host` (and `.bad`, and `.why`
  for the reason after a bad rating) in the resolution mail to the requester.
Both are compared in constant time; anything malformed is simply no token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(
    r"^(?P<local>[^+@]+)\+(?P<kind>[tb])(?P<number>\d{1,12})\.(?P<mac>[0-9a-f]{10})@(?P<domain>.+)$"
)


_RATE_RE = re.compile(
    r"^(?P<local>[^+@]+)\+rate\.(?P<number>\d{1,12})\.(?P<mac>[0-9a-f]{10})"
    r"\.(?P<what>good|bad|why)@(?P<domain>.+)$"
)
RATINGS = ("good", "bad")


@dataclass(frozen=True)
class Token:
    kind: str  # "t" reply token, "b" bounce token
    number: int  # ticket id (t) or outbox id (b)
    mac: str


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:10]


def _reply_mac(key: bytes, ticket_id: int, staff: str) -> str:
    return _mac(key, f"{ticket_id}:{staff.lower()}")


def reply_address(support: str, ticket_id: int, staff: str, key: bytes) -> str:
    local, _, domain = support.partition("@")
    return f"{local}+t{ticket_id}.{_reply_mac(key, ticket_id, staff)}@{domain}"


def bounce_address(support: str, outbox_id: int, key: bytes) -> str:
    local, _, domain = support.partition("@")
    return f"{local}+b{outbox_id}.{_mac(key, f'bounce:{outbox_id}')}@{domain}"


def rating_address(support: str, ticket_id: int, what: str, key: bytes) -> str:
    """What: good, bad, or why (the reason for a bad rating)."""
    local, _, domain = support.partition("@")
    return f"{local}+rate.{ticket_id}.{_mac(key, f'rate:{ticket_id}')}.{what}@{domain}"


def verify_rating(address: str, key: bytes) -> tuple[int, str] | None:
    """(ticket, good|bad|why) for a rating address we minted, else None."""
    found = _RATE_RE.match(address.lower())
    if not found:
        return None
    number = int(found.group("number"))
    if not hmac.compare_digest(found.group("mac"), _mac(key, f"rate:{number}")):
        return None
    return number, found.group("what")


def find_token(address: str) -> Token | None:
    found = _TOKEN_RE.match(address.lower())
    if not found:
        return None
    return Token(found.group("kind"), int(found.group("number")), found.group("mac"))


def reply_token_for(token: Token, staff: str, key: bytes) -> bool:
    """True when this reply token was minted for this staff member (and its ticket)."""
    expected = _reply_mac(key, token.number, staff)
    return token.kind == "t" and hmac.compare_digest(token.mac, expected)


def verify(address: str, staff: str, key: bytes) -> int | None:
    """The ticket a reply address is valid for, when it was minted for this staff member."""
    token = find_token(address)
    return token.number if token is not None and reply_token_for(token, staff, key) else None


def verify_bounce(address: str, key: bytes) -> int | None:
    """The outbox row a bounce address was minted for, or None."""
    token = find_token(address)
    if token is None or token.kind != "b":
        return None
    ok = hmac.compare_digest(token.mac, _mac(key, f"bounce:{token.number}"))
    return token.number if ok else None


def base_address(address: str) -> str:
    """support+anything@host -> support@host (for RCPT checks)."""
    local, _, domain = address.lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"
