"""The spam filter: per-token mail counts, scored by chi-square combining.

What the filter learns is, per token, the number of ham and of spam mails
that held it: tokens map to the columns of scikit-learn's
``HashingVectorizer(alternate_sign=False, binary=True)`` (``evidence.Columns``),
and learning adds a mail's columns to its class, one staff decision at a time,
in O(tokens) (``MultinomialNB.partial_fit`` kept the same counts but rebuilt
its 2 x 2^20 log-probabilities on every call: 40 ms per decision). The model
on disk is those counts (``modelfile.py``).

Scoring is not Naive Bayes' posterior (overconfident: every mail at 0 or 1,
and no calibration survives a change of year or source). It reads the counts
the way SpamBayes and bogofilter do (``combine.py``): Robinson's probability
per token, Fisher's chi-square over the clues. On top of that
(``evidence.py``, memoised per token):

* Words are judged among the mails of their own script. A script that the
  model has not seen in at least ``MIN_SCRIPT_MAILS`` ham *and* as many spam
  mails (Cyrillic, after training on the English spamassassin corpus) says
  nothing: its words count as never seen, and when it is the mail's main script
  so do all its words (an English brand name or a price in Russian text is not
  the clue it is in English spam). A customer writing in another language is
  judged on what the model does know, and with little evidence a mail stays
  in the ham band. Once staff have marked enough mail in that script, its
  words count.
* Tokens about how a mail is built (``STRUCTURE_PREFIXES``) change with the
  years more than what it says: their probability is held within
  ``0.5 ± STRUCTURE_CLAMP``.

Mail carrying the GTUBE test string is spam outright, as in SpamAssassin.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from maildesk.core.parse import InboundMail
from maildesk.spam.combine import combine, select_clues
from maildesk.spam.evidence import SCRIPTS, Columns, Snapshot
from maildesk.spam.modelfile import (
    N_FEATURES,
    SpamModelError,
    Stamp,
    file_lock,
    file_stamp,
    read_counts,
    write_counts,
)
from maildesk.spam.tokenize import SCRIPT_PREFIX, TOKENIZER_VERSION, tokenize

__all__ = ["COLD_START", "SpamFilter", "SpamModelError", "SpamThresholds", "SpamVerdict"]

TOP_TOKENS = 10
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

Band = Literal["ham", "unsure", "spam"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SpamThresholds:
    """Bands: ham < ham_below <= unsure <= spam_above < spam.

    The defaults come from the time split of the spamassassin corpus and from
    Russian customer mail (README, Spam): no ham held or quarantined there,
    3% of newer spam let through, 17% unsure.
    """

    ham_below: float = 0.6
    spam_above: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.ham_below <= self.spam_above <= 1.0:
            raise ValueError("need 0 <= ham_below <= spam_above <= 1")

    def band(self, probability: float) -> Band:
        if probability < self.ham_below:
            return "ham"
        if probability > self.spam_above:
            return "spam"
        return "unsure"


@dataclass(frozen=True)
class SpamVerdict:
    probability: float | None  # None: cold start, the mail was not scored
    band: Band
    model_version: str | None
    top_tokens: tuple[tuple[str, float], ...] = ()  # (token, log-odds of its p; > 0 = spammy)

    @property
    def scored(self) -> bool:
        return self.probability is not None


COLD_START = SpamVerdict(probability=None, band="ham", model_version=None)


@dataclass
class SpamFilter:
    path: Path
    thresholds: SpamThresholds = field(default_factory=SpamThresholds)
    _counts: FloatArray | None = None  # (2, N_FEATURES): ham, spam mails per feature
    _classes: FloatArray | None = None  # (2,): ham, spam mails learned
    _updates: int = 0
    _snapshot: Snapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _columns: Columns = field(default_factory=Columns, repr=False)
    _from_file: bool = field(default=False, repr=False)  # made by load(): merges before saving
    _stamp: Stamp | None = field(default=None, repr=False)  # of the file the counts came from

    @classmethod
    def load(cls, path: Path, thresholds: SpamThresholds) -> SpamFilter:
        """The model saved at ``path``; a missing file is a cold start (every mail ham)."""
        spam_filter = cls(path=path, thresholds=thresholds, _from_file=True)
        if path.exists():
            spam_filter._stamp = file_stamp(path)
            spam_filter._counts, spam_filter._classes, spam_filter._updates = read_counts(path)
            spam_filter._snapshot = spam_filter._make_snapshot()
        return spam_filter

    @property
    def trained(self) -> bool:
        """Both classes seen at least once; before that every mail is ham, unscored."""
        return self._snapshot is not None

    @property
    def model_version(self) -> str | None:
        snapshot = self._snapshot
        return snapshot.version if snapshot else None

    def class_counts(self) -> tuple[int, int]:
        """(ham, spam) mails learned so far."""
        if self._classes is None:
            return 0, 0
        ham, spam = self._classes
        return int(ham), int(spam)

    def score(self, mail: InboundMail) -> SpamVerdict:
        if self._snapshot is None:
            return COLD_START  # nothing learned: no need to tokenize
        if GTUBE in mail.text:
            return SpamVerdict(1.0, "spam", self._snapshot.version, (("GTUBE", 100.0),))
        return self.score_tokens(tokenize(mail))

    def score_tokens(self, tokens: list[str]) -> SpamVerdict:
        snapshot = self._snapshot
        if snapshot is None:
            return COLD_START
        if not tokens:
            return SpamVerdict(0.5, self.thresholds.band(0.5), snapshot.version)
        probabilities = snapshot.probabilities(tokens, self._columns)
        clues = select_clues(probabilities)
        probability = combine(probabilities[clues])
        top = tuple(
            (tokens[i], round(math.log(probabilities[i] / (1.0 - probabilities[i])), 4))
            for i in clues[:TOP_TOKENS]
        )
        return SpamVerdict(probability, self.thresholds.band(probability), snapshot.version, top)

    def _indices(self, tokens: list[str]) -> npt.NDArray[np.intp]:
        return np.array(self._columns(tokens), dtype=np.intp)

    def learn(
        self, mails: Sequence[InboundMail], labels: Sequence[bool], *, save: bool = True
    ) -> None:
        """Learn mails (True = spam) at once; save atomically unless told not to."""
        self.learn_tokens([tokenize(m) for m in mails], labels, save=save)

    def forget(
        self, mails: Sequence[InboundMail], labels: Sequence[bool], *, save: bool = True
    ) -> None:
        """Take back mails learned with ``labels``; see ``forget_tokens``."""
        self.forget_tokens([tokenize(m) for m in mails], labels, save=save)

    def learn_tokens(
        self, documents: Sequence[list[str]], labels: Sequence[bool], *, save: bool = True
    ) -> None:
        """Add token lists to their classes (True = spam); with ``save``, to the file too."""
        self._add(((documents, labels, 1.0),), save)

    def forget_tokens(
        self, documents: Sequence[list[str]], labels: Sequence[bool], *, save: bool = True
    ) -> None:
        """Take back mails learned with ``labels`` (a verdict learned, then corrected by staff).

        Counts never go below zero, so forgetting a mail that was never learned
        only loses what other mails taught about its tokens, never breaks the model.
        """
        self._add(((documents, labels, -1.0),), save)

    def relabel_tokens(
        self,
        documents: Sequence[list[str]],
        learned: Sequence[bool],
        labels: Sequence[bool],
        *,
        save: bool = True,
    ) -> None:
        """Move mails learned as ``learned`` to ``labels`` (a sure verdict that staff
        corrected): forget, then learn, under one lock and in one write of the file."""
        self._add(((documents, learned, -1.0), (documents, labels, 1.0)), save)

    def token_counts(self, tokens: list[str]) -> tuple[list[float], list[float]]:
        """Per token: the ham mails and the spam mails learned that held it."""
        if self._counts is None:
            return [0.0] * len(tokens), [0.0] * len(tokens)
        indices = self._indices(tokens)
        return self._counts[0, indices].tolist(), self._counts[1, indices].tolist()

    def _add(
        self,
        changes: Sequence[tuple[Sequence[list[str]], Sequence[bool], float]],
        save: bool,
    ) -> None:
        """Apply (documents, labels, +1 learn / -1 forget) changes in order, saving once."""
        for documents, labels, _ in changes:
            if len(documents) != len(labels):
                raise ValueError(f"{len(documents)} mails but {len(labels)} labels")
        if not any(documents for documents, _, _ in changes):
            return
        # Per mail, its columns once each (HashingVectorizer's binary=True).
        vectorized = [
            ([np.unique(self._indices(d)) for d in documents], labels, sign)
            for documents, labels, sign in changes
        ]
        with self._lock, file_lock(self.path, save):
            if save:
                self._merge_file()
            if self._counts is None or self._classes is None:
                self._counts = np.zeros((2, N_FEATURES), dtype=np.float64)
                self._classes = np.zeros(2, dtype=np.float64)
            for columns, labels, sign in vectorized:
                for mail_columns, label in zip(columns, labels, strict=True):
                    # In place: a snapshot shares these arrays, and a score taken meanwhile
                    # may see some of this mail's tokens counted and not others (never an
                    # error).
                    self._counts[int(label), mail_columns] += sign
                    self._classes[int(label)] += sign
                if sign < 0:
                    np.maximum(self._counts, 0.0, out=self._counts)
                    np.maximum(self._classes, 0.0, out=self._classes)
            self._updates += 1
            self._snapshot = self._make_snapshot()
            if save:
                write_counts(self.path, self._counts, self._classes, self._updates)
                self._stamp, self._from_file = file_stamp(self.path), True

    def _merge_file(self) -> None:
        """Before writing: take the file's counts if another process replaced it since
        this filter read it (`spam mark` while the daemon runs), so neither loses a lesson."""
        stamp = file_stamp(self.path)
        if not self._from_file or stamp is None or stamp == self._stamp:
            return  # a fresh filter (`train --reset`) replaces the file
        self._counts, self._classes, self._updates = read_counts(self.path)
        self._stamp = stamp

    def train_on_error(self, mail: InboundMail, is_spam: bool) -> bool:
        """Learn ``mail`` only if the current verdict is wrong or unsure; True if it learned.

        Before the model has seen both classes every correction is learned.
        """
        verdict = self.score(mail)
        expected: Band = "spam" if is_spam else "ham"
        if verdict.scored and verdict.band == expected:
            return False
        self.learn([mail], [is_spam])
        return True

    def save(self) -> None:
        if self._counts is None or self._classes is None:
            raise SpamModelError("nothing learned yet: there is no model to save")
        with self._lock, file_lock(self.path, True):
            write_counts(self.path, self._counts, self._classes, self._updates)
            self._stamp, self._from_file = file_stamp(self.path), True

    def _make_snapshot(self) -> Snapshot | None:
        counts, classes = self._counts, self._classes
        if counts is None or classes is None or min(classes) == 0:
            return None
        ham_total, spam_total = (float(c) for c in classes)
        markers = self._indices([SCRIPT_PREFIX + name for name in SCRIPTS])
        scripts = {
            name: (float(counts[0, i]), float(counts[1, i]))
            for name, i in zip(SCRIPTS, markers.tolist(), strict=True)
        }
        digest = hashlib.sha256(np.ascontiguousarray(classes).tobytes())
        digest.update(str(self._updates).encode())
        version = (
            f"chi2-t{TOKENIZER_VERSION}-{int(ham_total)}h{int(spam_total)}s-"
            f"{digest.hexdigest()[:8]}"
        )
        return Snapshot(counts[0], counts[1], ham_total, spam_total, scripts, version)
