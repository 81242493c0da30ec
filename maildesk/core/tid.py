"""The ticket ID (TID): its one format, and finding it in subjects."""

from __future__ import annotations

import re

PREFIX = "MD"

# "[MD-42]" as we write it; clients and people mangle case and spacing.
_TAG_RE = re.compile(r"\[\s*" + PREFIX + r"\s*[-#:]?\s*(\d{1,12})\s*\]", re.IGNORECASE)
_BARE_TAG_RE = re.compile(r"\s*" + PREFIX + r"-(\d{1,12})(?![\w-])", re.IGNORECASE)
_BARE_RE = re.compile(r"^\s*\[?\s*(?:" + PREFIX + r"\s*[-#:]?\s*)?(\d{1,12})\s*\]?\s*$", re.I)
# Reply/forward prefixes in the languages our customers write (Re, AW, Fwd, Ответ, Отв, ...).
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|wg|fw|fwd|tr|rv|ответ|отв|пересл|fw\[\d+\]|re\[\d+\])"
    r"\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)


def format_tid(ticket_id: int) -> str:
    return f"{PREFIX}-{ticket_id}"


def subject_tag(ticket_id: int) -> str:
    return f"[{format_tid(ticket_id)}]"


def find_tid(subject: str) -> int | None:
    """The ticket number tagged in a subject, wherever it stands; None if untagged."""
    found = find_tids(subject)
    return found[0] if found else None


def find_tids(subject: str) -> list[int]:
    """Every ticket number a subject names, the one to try first first: bracketed tags
    from the last to the first (a forward of a reply keeps the newest tag last); with no
    bracketed tag, a bare `MD-12` right after a reply prefix ("Re: MD-12 ..."). A bare
    one elsewhere is text ("MD-5 hash of the file"), not a tag."""
    tagged = [int(m.group(1)) for m in _TAG_RE.finditer(subject)]
    if tagged:
        return list(dict.fromkeys(reversed(tagged)))
    prefix = _PREFIX_RE.match(subject)
    if prefix is None:
        return []
    bare = _BARE_TAG_RE.match(subject, prefix.end())
    return [int(bare.group(1))] if bare else []


def parse_tid(text: str) -> int | None:
    """A TID as a user types it on the command line: '[MD-42]', 'MD-42', '42'."""
    found = _BARE_RE.match(text)
    return int(found.group(1)) if found else None


def clean_subject(subject: str) -> str:
    """The subject without reply prefixes and without our tag."""
    text = _TAG_RE.sub(" ", subject)
    previous = None
    while previous != text:
        previous = text
        text = _PREFIX_RE.sub("", text)
    return " ".join(text.split())


def tagged_subject(ticket_id: int, subject: str) -> str:
    return f"{subject_tag(ticket_id)} {clean_subject(subject) or '(no subject)'}"
