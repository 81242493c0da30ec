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
        self._stamp: float | None = None
        self._filter = SpamFilter(path=path, thresholds=thresholds)
        self.reload_if_changed()

    def current(self) -> SpamFilter:
        return self._filter

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def reload_if_changed(self) -> None:
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._filter = SpamFilter.load(self.path, self.thresholds)
        except SpamModelError as exc:
            log.error("spam model not loaded, keeping the previous one: %s", exc)
            return
        if self._filter.trained:
            log.info("spam model %s loaded", self._filter.model_version)
        else:
            log.info("no spam model at %s yet: every mail is treated as ham, unscored", self.path)
