"""Saved mail on disk: .eml files, directories, Maildirs and mbox files."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator, Sequence
from pathlib import Path

from maildesk.errors import MaildeskError


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(5)
    return head == b"From "


def _from_file(path: Path) -> Iterator[tuple[str, bytes]]:
    if _is_mbox(path):
        box = mailbox.mbox(str(path), create=False)
        try:
            for key in box.iterkeys():
                yield f"{path}#{key}", box.get_bytes(key)
        finally:
            box.close()
    else:
        yield str(path), path.read_bytes()


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
