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


def count_messages(paths: Sequence[Path]) -> int:
    return sum(1 for _ in iter_messages(paths))
