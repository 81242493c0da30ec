"""The data directory: private to the service user, and one `maildesk run` per SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from maildesk.errors import ConfigError

LOCK_NAME = "maildesk.lock"
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def make_private(data_dir: Path) -> None:
    """Create the data directory 0700 (and tighten an existing one we own)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        if data_dir.stat().st_uid == os.getuid():
            data_dir.chmod(0o700)


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def make_database_private(database_url: str) -> None:
    """SQLite creates its files with the umask; the database holds every mail: 0600."""
    path = sqlite_path(database_url)
    if path is None:
        return
    for suffix in SQLITE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            Path(f"{path}{suffix}").chmod(0o600)


class DataDirLock:
    """An exclusive lock (flock) on data/maildesk.lock, holding the PID of its owner.

    Taken before `run` touches anything, so a second instance on the same data
    directory stops with one line instead of resetting the first one's state.
    The kernel releases it when the process dies, however it dies.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent}: in use by another `maildesk run` (PID {holder}); "
                "one daemon per data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
