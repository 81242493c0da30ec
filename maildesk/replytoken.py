"""HMAC reply tokens: support+t42.k9f2c0d1e3@host identifies staff replies (invariant 5)."""

from __future__ import annotations

import hashlib
import hmac
import re

_TOKEN_RE = re.compile(
    r"^(?P<local>[^+@]+)\+t(?P<ticket>\d+)\.(?P<mac>[0-9a-f]{10})@(?P<domain>.+)$"
)


def _mac(key: bytes, ticket_id: int, staff: str) -> str:
    return hmac.new(key, f"{ticket_id}:{staff.lower()}".encode(), hashlib.sha256).hexdigest()[:10]


def reply_address(support: str, ticket_id: int, staff: str, key: bytes) -> str:
    local, _, domain = support.partition("@")
    return f"{local}+t{ticket_id}.{_mac(key, ticket_id, staff)}@{domain}"


def verify(address: str, staff: str, key: bytes) -> int | None:
    """The ticket a reply address is valid for, when it was minted for this staff member."""
    found = _TOKEN_RE.match(address.lower())
    if not found:
        return None
    ticket_id = int(found.group("ticket"))
    ok = hmac.compare_digest(found.group("mac"), _mac(key, ticket_id, staff))
    return ticket_id if ok else None


def base_address(address: str) -> str:
    """support+anything@host -> support@host (for RCPT checks)."""
    local, _, domain = address.lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"
