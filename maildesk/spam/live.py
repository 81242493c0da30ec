"""The daemon's spam filter: loaded at start, reloaded when the model file changes
(e.g. after `maildesk spam train` or `spam mark` in another process)."""

from __future__ import annotations

import logging
from pathlib import Path

from maildesk.spam.model import SpamFilter, SpamModelError, SpamThresholds

log = logging.getLogger(__name__)


class LiveSpamFilter:
    def __init__(self, path: Path, thresholds: SpamThresholds) -> None:
        self.path = path
        self.thresholds = thresholds
        self._stamp: tuple[int, int, int] | None = None
        self._filter = SpamFilter(path=path, thresholds=thresholds)
        self.reload_if_changed()

    def current(self) -> SpamFilter:
        return self._filter

    def _mtime(self) -> tuple[int, int, int] | None:
        """Changes with every atomic replace (a new inode), even within one mtime tick."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino, stat.st_size

    def reload_if_changed(self) -> None:
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._filter = SpamFilter.load(self.path, self.thresholds)
        except SpamModelError as exc:
            log.error(
                "spam model not loaded, mail is scored as before (unscored ham if there was "
                "no model): %s",
                exc,
            )
            return
        if self._filter.trained:
            log.info("spam model %s loaded", self._filter.model_version)
        else:
            log.info("no spam model at %s yet: every mail is treated as ham, unscored", self.path)
