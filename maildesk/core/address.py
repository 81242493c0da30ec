"""Mail addresses from headers an attacker wrote (RFC 5322 / RFC 2047). Pure.

An address comes only from the addr-spec, parsed on the undecoded header by
the standard library's RFC 5322 parser (the one `email.headerregistry` uses): an encoded
word is never address syntax, so `=?utf-8?q?ann@example.org?= <m@evil.test>`
is m@evil.test with the display name "ann@example.org". Display names are
decoded only afterwards and only ever displayed.

To and Cc, whose display names are never used and whose addresses carry no
trust, are read by the stdlib's faster ``email.utils.getaddresses`` where the
list is plain enough that the two parsers cannot part (see `_plain_list`).

An addr-spec that a relay could read differently from us (a quoted local part
with a comma, a domain literal, control characters) is *no address*: the mail
is processed, nothing automatic is sent to it, and the reason is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import AddressHeader
from email.utils import getaddresses
from typing import Any

import idna

# RFC 5322 dot-atom local part (atext), plus non-ASCII letters/digits (RFC 6531).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_RE = re.compile(rf"{_ATEXT}+(\.{_ATEXT}+)*")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# RFC 5322 2.2.3: a header is unfolded by removing each CRLF that is followed by WSP.
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
# C0 controls, DEL and anything str.isspace() calls white space (Unicode spaces too).
_CONTROL_OR_SPACE_RE = re.compile(r"[\x00-\x20\x7f\s]")
# Non-ASCII letters and digits stand in as "a" (SMTPUTF8); any other non-ASCII keeps its meaning.
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_QUOTED_RE = re.compile(r'"[^"]*"')  # no quoted pairs here: a backslash takes the strict path
# Where getaddresses and the RFC 5322 parser may part: comments, quoted pairs, domain
# literals, groups, encoded words, and any control character (kept to the strict one).
_STRICT_SYNTAX_RE = re.compile(r"[()\\\[\]:;]|=\?|[\x00-\x08\x0a-\x1f\x7f]")
MAX_ADDRESS = 254


@dataclass(frozen=True)
class ParsedAddresses:
    addresses: tuple[tuple[str, str], ...]  # (display name, lowercased addr-spec)
    problems: tuple[str, ...]  # why an address in the header was not used


def parse_addresses(
    header: str,
    values: Sequence[object],
    fix_text: Callable[[str], str] | None = None,
    *,
    names: bool = True,
) -> ParsedAddresses:
    """Every usable address in the given raw values of one header (From, To, Cc, ...).

    With ``names=False`` (recipient lists: To, Cc) the display names are left empty,
    and a plain list is read by the faster of the stdlib's two parsers (see
    `_plain_list`).
    """
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for value in values:
        raw = _utf8_header(_FOLD_RE.sub("", str(value)))  # a long To/Cc list comes folded
        if not raw.strip():
            continue
        mailboxes = None if names else _plain_list(raw)
        if mailboxes is None:
            try:
                mailboxes = _rfc5322_list(raw, names)
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
            if names:
                name = display_name(fix_text(name) if fix_text else name)
            found.append((name, address.lower()))
    return ParsedAddresses(tuple(found), tuple(problems))


def _rfc5322_list(raw: str, names: bool) -> list[tuple[str, str, str]]:
    """(display name, local part, domain) of every mailbox, groups opened.

    The stdlib's RFC 5322 address-list parser (what email.headerregistry uses), on the
    undecoded value: encoded words are decoded only inside phrases.
    """
    return [
        (_name_of(mb) if names else "", mb.local_part or "", mb.domain or "")
        for group in AddressHeader.value_parser(raw).addresses
        for mb in group.all_mailboxes
    ]


def _name_of(mailbox: Any) -> str:
    try:
        return str(mailbox.display_name or "")
    except (TypeError, AttributeError):  # ". <a@b.c>" (obs-phrase) trips the stdlib
        return ""


def _plain_list(raw: str) -> list[tuple[str, str, str]] | None:
    """A plain recipient list read by `email.utils.getaddresses`, or None: use the strict parser.

    getaddresses (the stdlib's older RFC 2822 parser) reads a 50-address Cc seven times
    faster than the RFC 5322 parser, but it can read a crafted value differently
    (CVE-2023-27043: comments, escapes and unbalanced quotes). So it only gets values
    with none of the syntax where the two parsers part (comments, quoted pairs, domain
    literals, groups, encoded words), and its answer is kept only when it found exactly
    one address per list element, each written out as it is in the value (not inside a
    quoted name) and fit to use. Used for To and Cc only, whose addresses carry no
    trust (a reply or bounce token in them is checked by its HMAC), never for From or
    Reply-To; tests/core/test_address_lists.py holds the two parsers to the same answer.
    """
    if _STRICT_SYNTAX_RE.search(raw) or raw.count('"') % 2:
        return None
    pairs = getaddresses([raw])
    # Outside quoted names, each comma ends one list element (nothing else can hide one
    # here), and each element must hold exactly one "@" and come back as one address.
    bare = _QUOTED_RE.sub('""', raw)
    elements = bare.split(",")
    if len(pairs) != len(elements) or any(e.count("@") != 1 for e in elements):
        return None
    mailboxes = []
    for _, address in pairs:
        local, at, domain = address.rpartition("@")
        # getaddresses joins atoms ("a@b.c x" -> "a@b.cx"): only an address written out
        # as such, and fit to use, is taken; anything else is the strict parser's to judge.
        if not at or address not in bare or unusable(local, domain):
            return None
        mailboxes.append(("", local, domain))
    return mailboxes


def unusable(local: str, domain: str) -> str | None:
    """Why this addr-spec must not be mailed to or trusted, or None when it is fine."""
    if not local or not domain:
        return "no local part or domain"
    if len(local) + 1 + len(domain) > MAX_ADDRESS:
        return "too long"
    if _CONTROL_OR_SPACE_RE.search(local) or _CONTROL_OR_SPACE_RE.search(domain):
        return "control character or space"
    if not _LOCAL_RE.fullmatch(_ascii_stand_in(local)):
        return "quoted or unusual local part a relay may read differently"
    labels = _ascii_stand_in(domain.lower()).split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return "not a host name"
    return None


def ascii_domain(address: str) -> str:
    """The address with its domain in ASCII (IDNA 2008 A-labels, UTS #46 mapping):
    ivan@пример.рф is ivan@xn--e1afmkfd.xn--p1ai, which every header and relay takes
    (RFC 5890). A non-ASCII local part stays as it is: only SMTPUTF8 carries it. A domain
    IDNA refuses comes back unchanged (then it, too, needs SMTPUTF8)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except UnicodeError:  # idna.IDNAError included
        return address


def is_usable(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at) and unusable(local, domain) is None


def display_name(name: str) -> str:
    """A decoded display name on one line, for display only."""
    cleaned = "".join(c if c.isprintable() else " " for c in _fix_surrogates(name))
    return " ".join(cleaned.split())[:300]


def _ascii_stand_in(text: str) -> str:
    # Non-ASCII letters and digits are allowed (SMTPUTF8); anything else keeps its meaning.
    if text.isascii():
        return text
    return _NON_ASCII_RE.sub(lambda m: "a" if m.group().isalnum() else m.group(), text)


def _utf8_header(text: str) -> str:
    """A header value in raw UTF-8 (RFC 6532: an SMTPUTF8 mail from иван@пример.рф) as
    the text it is. Only valid UTF-8: its multi-byte sequences never decode to ASCII, so
    this adds no address syntax; anything else stays as read (and is no address)."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return text


def _fix_surrogates(text: str) -> str:
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _shown(text: str) -> str:
    return repr(" ".join(text.split())[:120])
