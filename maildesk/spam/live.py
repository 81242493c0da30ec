"""The daemon's spam filter: loaded at start, reloaded when the model file changes
(e.g. after `maildesk spam train` or `spam mark` in another process)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from maildesk.parse import InboundMail
from maildesk.spam.model import SpamFilter, SpamModelError, SpamThresholds, file_stamp

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

    def learn(self, mail: InboundMail, is_spam: bool) -> None:
        """A staff decision (`#spam`/`#ham` by mail): learned at once, the model file
        replaced atomically.

        Safe beside other writers (`maildesk spam mark`, another instance): under a
        lock on the model file, counts that another process saved meanwhile are read
        first, so no decision is lost. Raises SpamModelError if the file is unusable.
        """
        with self._learning:
            self._filter.learn([mail], [is_spam])
            self._stamp = file_stamp(self.path)

    def reload_if_changed(self) -> None:
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
