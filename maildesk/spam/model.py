"""The spam filter: counts learned with scikit-learn, scored by chi-square combining.

What the filter learns is, per token, the number of ham and of spam mails
that held it: scikit-learn's ``HashingVectorizer(alternate_sign=False,
binary=True)`` maps tokens to columns, and learning adds a mail's columns to
its class, one staff decision at a time, in O(tokens) (``MultinomialNB.
partial_fit`` kept the same counts but rebuilt its 2 x 2^20 log-probabilities
on every call: 40 ms per decision). The model on disk is those counts (per
class for the features seen, and mails per class) written with ``np.savez``
and read back with ``allow_pickle=False``: no pickle, nothing executable.
The file layout is the one maildesk has always written (format 1).

Scoring is not Naive Bayes' posterior (overconfident: every mail at 0 or 1,
and no calibration survives a change of year or source). It reads the counts
the way SpamBayes and bogofilter do (``combine.py``): Robinson's probability
per token, Fisher's chi-square over the clues. On top of that:

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

import fcntl
import hashlib
import math
import os
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import HashingVectorizer

from maildesk.core.parse import InboundMail
from maildesk.errors import MaildeskError
from maildesk.spam.combine import combine, select_clues, token_probabilities
from maildesk.spam.tokenize import SCRIPT_PREFIX, TOKENIZER_VERSION, script_of, tokenize

N_FEATURES = 2**20
ALPHA = 0.1  # written to the file for older readers; scoring uses Robinson's prior instead
MIN_SCRIPT_MAILS = 5  # ham and spam mails each, before a script's words count
STRUCTURE_CLAMP = 0.15
SCRIPTS = (
    "latin",
    "cyrillic",
    "greek",
    "armenian",
    "hebrew",
    "arabic",
    "indic",
    "thai",
    "georgian",
    "cjk",
    "other",
)
TOP_TOKENS = 10
# How a mail is built (HTML only, charset, mailer, attachment types) changes with the
# years far more than what it says: a public corpus where nearly every HTML mail
# is spam would make HTML alone damning. Such tokens count, but at most this much.
STRUCTURE_PREFIXES = ("html:", "ct:", "charset:", "mailer:", "hdr:", "att:", "s:ALLCAPS", "s:bang")
_INDEX_CACHE_SIZE = 500_000  # tokens; cleared when full (~60 MB at most)
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
FORMAT_VERSION = 1
RETRAIN = "retrain: `maildesk spam train --reset --ham PATH --spam PATH`"

Band = Literal["ham", "unsure", "spam"]
FloatArray = npt.NDArray[np.float64]


class SpamModelError(MaildeskError):
    """The model file exists but cannot be used (corrupt, or made by another tokenizer)."""


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


@dataclass(frozen=True)
class _Snapshot:
    """What scoring reads. Never mutated: learning builds a new one and swaps it in."""

    ham: FloatArray  # per feature: ham mails that held it
    spam: FloatArray  # per feature: spam mails that held it
    ham_total: float
    spam_total: float
    scripts: dict[str, tuple[float, float]]  # script -> (ham mails, spam mails) written in it
    version: str

    def script_known(self, script: str) -> bool:
        if script == "common":
            return True
        ham, spam = self.scripts.get(script, (0.0, 0.0))
        return min(ham, spam) >= MIN_SCRIPT_MAILS


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def make_vectorizer() -> HashingVectorizer:
    """Imported on first use: scikit-learn costs about a second to import, and a daemon
    without a model (or a CLI command that never scores) does not need it."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer=_identity,  # documents are token lists
        n_features=N_FEATURES,
        alternate_sign=False,
        binary=True,
        norm=None,
        dtype=np.float64,
    )


@dataclass
class SpamFilter:
    path: Path
    thresholds: SpamThresholds = field(default_factory=SpamThresholds)
    _counts: FloatArray | None = None  # (2, N_FEATURES): ham, spam mails per feature
    _classes: FloatArray | None = None  # (2,): ham, spam mails learned
    _updates: int = 0
    _snapshot: _Snapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _vectorizer_made: HashingVectorizer | None = field(default=None, repr=False)
    _index_cache: dict[str, int] = field(default_factory=dict, repr=False)
    _kind_cache: dict[str, str] = field(default_factory=dict, repr=False)
    _from_file: bool = field(default=False, repr=False)  # made by load(): merges before saving
    _stamp: Stamp | None = field(default=None, repr=False)  # of the file the counts came from

    def _vectorizer(self) -> HashingVectorizer:
        if self._vectorizer_made is None:
            self._vectorizer_made = make_vectorizer()
        return self._vectorizer_made

    @classmethod
    def load(cls, path: Path, thresholds: SpamThresholds) -> SpamFilter:
        """The model saved at ``path``; a missing file is a cold start (every mail ham)."""
        spam_filter = cls(path=path, thresholds=thresholds, _from_file=True)
        if path.exists():
            spam_filter._stamp = file_stamp(path)
            spam_filter._counts, spam_filter._classes, spam_filter._updates = _read(path)
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
        indices = self._indices(tokens)
        ham_total, spam_total, neutral, structural = self._context(tokens, snapshot)
        probabilities = token_probabilities(
            snapshot.ham[indices], snapshot.spam[indices], ham_total, spam_total
        )
        probabilities[neutral] = 0.5
        probabilities[structural] = np.clip(
            probabilities[structural], 0.5 - STRUCTURE_CLAMP, 0.5 + STRUCTURE_CLAMP
        )
        clues = select_clues(probabilities)
        probability = combine(probabilities[clues])
        top = tuple(
            (tokens[i], round(math.log(probabilities[i] / (1.0 - probabilities[i])), 4))
            for i in clues[:TOP_TOKENS]
        )
        return SpamVerdict(probability, self.thresholds.band(probability), snapshot.version, top)

    def _context(
        self, tokens: list[str], snapshot: _Snapshot
    ) -> tuple[FloatArray, FloatArray, list[int], list[int]]:
        """Per token: the ham/spam mails its count is out of; which carry no evidence
        (script markers, words of a script not learned, every word when the mail is
        mostly written in such a script); which describe structure."""
        kinds = self._kinds(tokens)
        seen: dict[str, int] = {}
        for kind in kinds:
            if kind in _SCRIPT_SET:
                seen[kind] = seen.get(kind, 0) + 1
        main_known = snapshot.script_known(max(seen, key=seen.__getitem__) if seen else "latin")
        known = {k: main_known and snapshot.script_known(k) for k in (*seen, "common")}
        ham_total = np.full(len(tokens), snapshot.ham_total)
        spam_total = np.full(len(tokens), snapshot.spam_total)
        neutral = [
            i
            for i, kind in enumerate(kinds)
            if kind == _MARKER or (kind in known and not known[kind])
        ]
        structural = [i for i, kind in enumerate(kinds) if kind == _STRUCTURE]
        for script in seen:
            if known[script]:
                rows = [i for i, kind in enumerate(kinds) if kind == script]
                ham_total[rows], spam_total[rows] = snapshot.scripts[script]
        return ham_total, spam_total, neutral, structural

    def _kinds(self, tokens: list[str]) -> list[str]:
        """Per token: structure, script marker, the script of a word, or "" (memoised)."""
        cache = self._kind_cache
        kinds = [cache.get(t, "?") for t in tokens]
        if "?" in kinds:
            if len(cache) > _INDEX_CACHE_SIZE:
                cache.clear()
            for i, token in enumerate(tokens):
                if kinds[i] == "?":
                    kinds[i] = cache[token] = _kind_of(token)
        return kinds

    def _indices(self, tokens: list[str]) -> npt.NDArray[np.int64]:
        """The HashingVectorizer column of each token (memoised: hashing is most of the cost).

        Safe under concurrent scoring: a thread only reads the shared memo through
        ``get`` and fills its own misses from a local mapping.
        """
        cache = self._index_cache
        found = [cache.get(t, -1) for t in tokens]
        if -1 in found:
            missing = [t for t, i in zip(tokens, found, strict=True) if i < 0]
            # One single-token document per token: row i holds the column of missing[i].
            columns = self._vectorizer().transform([[t] for t in missing]).indices.tolist()
            fresh = dict(zip(missing, columns, strict=True))
            found = [i if i >= 0 else fresh[t] for t, i in zip(tokens, found, strict=True)]
            if len(cache) > _INDEX_CACHE_SIZE:
                cache.clear()
            cache.update(fresh)
        return np.array(found, dtype=np.int64)

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
        vectorized = [
            (
                self._vectorizer().transform(list(documents)),
                np.fromiter((1 if label else 0 for label in labels), dtype=np.int64),
                sign,
            )
            for documents, labels, sign in changes
            if documents
        ]
        with self._lock, _file_lock(self.path, save):
            if save:
                self._merge_file()
            if self._counts is None or self._classes is None:
                self._counts = np.zeros((2, N_FEATURES), dtype=np.float64)
                self._classes = np.zeros(2, dtype=np.float64)
            for matrix, target, sign in vectorized:
                for label in (0, 1):
                    rows = matrix[target == label]
                    # In place: a snapshot shares these arrays, and a score taken meanwhile
                    # may see some of this mail's tokens counted and not others (never an
                    # error).
                    np.add.at(self._counts[label], rows.indices, sign * rows.data)
                    self._classes[label] += sign * rows.shape[0]
                if sign < 0:
                    np.maximum(self._counts, 0.0, out=self._counts)
                    np.maximum(self._classes, 0.0, out=self._classes)
            self._updates += 1
            self._snapshot = self._make_snapshot()
            if save:
                _write(self.path, self._counts, self._classes, self._updates)
                self._stamp, self._from_file = file_stamp(self.path), True

    def _merge_file(self) -> None:
        """Before writing: take the file's counts if another process replaced it since
        this filter read it (`spam mark` while the daemon runs), so neither loses a lesson."""
        stamp = file_stamp(self.path)
        if not self._from_file or stamp is None or stamp == self._stamp:
            return  # a fresh filter (`train --reset`) replaces the file
        self._counts, self._classes, self._updates = _read(self.path)
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
        with self._lock, _file_lock(self.path, True):
            _write(self.path, self._counts, self._classes, self._updates)
            self._stamp, self._from_file = file_stamp(self.path), True

    def _make_snapshot(self) -> _Snapshot | None:
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
        return _Snapshot(counts[0], counts[1], ham_total, spam_total, scripts, version)


_STRUCTURE, _MARKER = "structure", "marker"
_SCRIPT_SET = frozenset(SCRIPTS)


def _kind_of(token: str) -> str:
    if token.startswith(STRUCTURE_PREFIXES):
        return _STRUCTURE
    if token.startswith(SCRIPT_PREFIX):
        return _MARKER
    return script_of(token) or ""


Stamp = tuple[int, int, int]


def file_stamp(path: Path) -> Stamp | None:
    """Changes with every atomic replace (a new inode), even within one mtime tick."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


@contextmanager
def _file_lock(path: Path, wanted: bool) -> Iterator[None]:
    """One writer of the model file at a time, across processes: read, learn and replace
    happen as one step. The lock is a `flock` on the model's directory (the file itself
    is replaced by each save, and a lock file would be one more file to leave behind)."""
    if not wanted:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # releases the lock


def _write(path: Path, counts: FloatArray, classes: FloatArray, updates: int) -> None:
    """Write the counts to a temporary file, fsync it, then rename it over ``path``."""
    seen = np.flatnonzero(counts.sum(axis=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as handle:
            np.savez(
                handle,
                format_version=np.int64(FORMAT_VERSION),
                tokenizer_version=np.int64(TOKENIZER_VERSION),
                n_features=np.int64(N_FEATURES),
                alpha=np.float64(ALPHA),
                updates=np.int64(updates),
                classes=np.array([0, 1], dtype=np.int64),
                class_count=np.asarray(classes, dtype=np.float64),
                feature_index=seen.astype(np.int64),
                feature_count=counts[:, seen],
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read(path: Path) -> tuple[FloatArray, FloatArray, int]:
    """The counts, mails per class and updates in ``path`` (never unpickling anything)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = "it holds pickled objects" if "allow_pickle" in str(exc) else str(exc)
        raise SpamModelError(f"{path}: not a maildesk spam model ({reason})") from None
    try:
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise SpamModelError(
                f"{path}: model format {int(arrays['format_version'])}, this maildesk reads "
                f"format {FORMAT_VERSION}: {RETRAIN}"
            )
        if int(arrays["tokenizer_version"]) != TOKENIZER_VERSION:
            raise SpamModelError(
                f"{path}: trained with tokenizer v{int(arrays['tokenizer_version'])}, "
                f"this maildesk has v{TOKENIZER_VERSION}: {RETRAIN}"
            )
        if int(arrays["n_features"]) != N_FEATURES:
            found = int(arrays["n_features"])
            raise SpamModelError(f"{path}: {found} features, expected {N_FEATURES}")
        index = arrays["feature_index"].astype(np.int64)
        counts = np.zeros((2, N_FEATURES), dtype=np.float64)
        counts[:, index] = arrays["feature_count"]
        classes = arrays["class_count"].astype(np.float64).reshape(2)
        return counts, classes, int(arrays["updates"])
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise SpamModelError(f"{path}: damaged spam model ({type(exc).__name__}: {exc})") from None
