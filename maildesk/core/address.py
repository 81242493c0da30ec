"""Mail addresses from headers an attacker wrote (RFC 5322 / RFC 2047). Pure.

An address comes only from the addr-spec, parsed on the undecoded header by
the standard library's RFC 5322 parser (the one `email.headerregistry` uses): an encoded
word is never address syntax, so `=?utf-8?q?ann@example.org?= <m@evil.test>`
is m@evil.test with the display name "ann@example.org". Display names are
decoded only afterwards and only ever displayed.

An addr-spec that a relay could read differently from us (a quoted local part
with a comma, a domain literal, control characters) is *no address*: the mail
is processed, nothing automatic is sent to it, and the reason is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import AddressHeader

# RFC 5322 dot-atom local part (atext), plus non-ASCII letters/digits (RFC 6531).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_RE = re.compile(rf"{_ATEXT}+(\.{_ATEXT}+)*")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# RFC 5322 2.2.3: a header is unfolded by removing each CRLF that is followed by WSP.
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
MAX_ADDRESS = 254


@dataclass(frozen=True)
class ParsedAddresses:
    addresses: tuple[tuple[str, str], ...]  # (display name, lowercased addr-spec)
    problems: tuple[str, ...]  # why an address in the header was not used


def parse_addresses(
    header: str, values: Sequence[object], fix_text: Callable[[str], str] | None = None
) -> ParsedAddresses:
    """Every usable address in the given raw values of one header (From, To, Cc, ...)."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for value in values:
        raw = _FOLD_RE.sub("", str(value))  # a long To/Cc list comes folded
        if not raw.strip():
            continue
        try:
            # The stdlib's RFC 5322 address-list parser (what email.headerregistry uses),
            # on the undecoded value: encoded words are decoded only inside phrases.
            mailboxes = [
                (mb.display_name or "", mb.local_part or "", mb.domain or "")
                for group in AddressHeader.value_parser(raw).addresses
                for mb in group.all_mailboxes
            ]
        except Exception as exc:  # the parser gave up on this value: say so, keep the mail
            problems.append(f"{header}: unparseable ({type(exc).__name__})")
            continue
        if not mailboxes:
            problems.append(f"{header}: no address in {_shown(raw)}")
        for name, local, domain in mailboxes:
            address = f"{local}@{domain}" if domain else local
            why = unusable(local, domain)
            if why:
                problems.append(f"{header}: {_shown(address)} is not used as an address ({why})")
                continue
            found.append((display_name(fix_text(name) if fix_text else name), address.lower()))
    return ParsedAddresses(tuple(found), tuple(problems))


def unusable(local: str, domain: str) -> str | None:
    """Why this addr-spec must not be mailed to or trusted, or None when it is fine."""
    if not local or not domain:
        return "no local part or domain"
    if len(local) + 1 + len(domain) > MAX_ADDRESS:
        return "too long"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in local + domain):
        return "control character or space"
    if not _LOCAL_RE.fullmatch(_ascii_stand_in(local)):
        return "quoted or unusual local part a relay may read differently"
    labels = _ascii_stand_in(domain.lower()).split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return "not a host name"
    return None


def is_usable(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at) and unusable(local, domain) is None


def display_name(name: str) -> str:
    """A decoded display name on one line, for display only."""
    cleaned = "".join(c if c.isprintable() else " " for c in _fix_surrogates(name))
    return " ".join(cleaned.split())[:300]


def _ascii_stand_in(text: str) -> str:
    # Non-ASCII letters and digits are allowed (SMTPUTF8); anything else keeps its meaning.
    return "".join("a" if ord(c) > 127 and c.isalnum() else c for c in text)


def _fix_surrogates(text: str) -> str:
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _shown(text: str) -> str:
    return repr(" ".join(text.split())[:120])
