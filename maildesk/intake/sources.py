"""Saved mail on disk: .eml files, directories, Maildirs and mbox files."""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from maildesk.errors import MaildeskError


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


# An mbox envelope line: "From sender@host Thu Aug 22 12:36:23 2002" (after a blank line).
_ENVELOPE_RE = re.compile(rb"(?:\A|\n\n)From \S+ +[A-Z][a-z]{2} [A-Z][a-z]{2} +\d")


def _from_file(path: Path) -> Iterator[tuple[str, bytes]]:
    data = path.read_bytes()
    if not data.startswith(b"From "):
        yield str(path), data
        return
    if len(_ENVELOPE_RE.findall(data)) <= 1:
        # One saved mail with an envelope line: drop that line, keep the rest byte for byte.
        yield str(path), data.split(b"\n", 1)[1] if b"\n" in data else b""
        return
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield f"{path}#{key}", box.get_bytes(key)
    finally:
        box.close()


def iter_messages(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for every message under the paths, in a stable order."""
    for path in paths:
        if not path.exists():
            raise MaildeskError(f"{path}: no such file or directory")
        if path.is_file():
            yield from _from_file(path)
        elif _is_maildir(path):
            box = mailbox.Maildir(str(path), create=False)
            for key in sorted(box.iterkeys()):
                yield f"{path}/{key}", box.get_bytes(key)
        else:
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.startswith(".") or any(
                    part in ("tmp",) for part in child.relative_to(path).parts[:-1]
                ):
                    continue
                yield from _from_file(child)


_FIELD_RE = re.compile(rb"^[!-9;-~]+[ \t]*:")  # RFC 5322 field name, then a colon
# Headers every real mail has at least one of (Received alone: an MTA's copy).
_MAIL_FIELDS = frozenset({b"from", b"sender", b"date", b"message-id", b"received", b"subject"})


def not_mail(raw: bytes) -> str | None:
    """Why `raw` is not a mail (one line), or None when it looks like one: it starts
    with a `Name: value` header line, and its header section names at least one of
    From, Date, Message-ID, Received, Subject. Real mail with a broken header line
    further down still passes; /etc/hostname or a PDF does not become a ticket."""
    if not raw.strip():
        return "empty"
    names: set[bytes] = set()
    for number, line in enumerate(raw.splitlines()[:1000]):
        if not line.strip():
            break
        match = _FIELD_RE.match(line)
        if match is None and number == 0:
            return "not a mail (it does not start with a header line)"
        if match is not None:
            names.add(match.group(0).rstrip(b": \t").lower())
    if not names & _MAIL_FIELDS:
        return "not a mail (no From, Date, Message-ID, Received or Subject header)"
    return None


def count_messages(paths: Sequence[Path]) -> int:
    return sum(1 for _ in iter_messages(paths))
