"""The daemon's spam filter: loaded at start, reloaded when the model file changes
(e.g. after `maildesk spam train` or `spam mark` in another process), and the one the
daemon's own learning (`maildesk.work.spamlearn`) writes through."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from maildesk.spam.model import SpamFilter, SpamModelError, SpamThresholds
from maildesk.spam.modelfile import file_stamp

log = logging.getLogger(__name__)


class LiveSpamFilter:
    def __init__(self, path: Path, thresholds: SpamThresholds) -> None:
        self.path = path
        self.thresholds = thresholds
        self._stamp: tuple[int, int, int] | None = None
        # A cold filter that still reads a model file another process writes meanwhile.
        self._filter = SpamFilter(path=path, thresholds=thresholds, _from_file=True)
        self._learning = threading.Lock()
        self.reload_if_changed()

    def current(self) -> SpamFilter:
        return self._filter

    def learn_tokens(self, documents: Sequence[list[str]], labels: Sequence[bool]) -> None:
        """Learn a batch (the daemon's sure verdicts) in one atomic write of the model file."""
        with self._learning:
            self._filter.learn_tokens(documents, labels)
            self._stamp = file_stamp(self.path)

    def forget_tokens(self, documents: Sequence[list[str]], labels: Sequence[bool]) -> None:
        """Take back a batch learned with ``labels``, in one atomic write."""
        with self._learning:
            self._filter.forget_tokens(documents, labels)
            self._stamp = file_stamp(self.path)

    def reload_if_changed(self) -> None:
        # Under the learning lock: a reload between another thread's write and its new
        # stamp would load the file of before and then never see the change.
        with self._learning:
            self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        stamp = file_stamp(self.path)
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
