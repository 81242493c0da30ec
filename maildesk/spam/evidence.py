"""What one model snapshot says about a mail's tokens: per token, memoised; per mail, in numpy.

A token's probability depends only on the snapshot: its column's ham and
spam counts, out of the mails of its own script, held near 0.5 if it
describes structure (``model.py`` says why). So each snapshot keeps a memo
token -> (probability, kind), and scoring a mail is one dictionary lookup
per token plus a few array operations; tokens seen for the first time are
hashed and computed together. Learning makes a new snapshot, with an empty
memo. What depends on the mail itself (whether its main script is known)
is decided per mail from the kinds.

Columns are those of scikit-learn's ``HashingVectorizer(n_features=2**20,
alternate_sign=False)``: the absolute value of the token's signed 32-bit
MurmurHash3 (seed 0, UTF-8) modulo the number of features. Computed with
scikit-learn's own ``murmurhash3_32`` per token instead of building a sparse
matrix per mail; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from maildesk.spam.combine import token_probabilities
from maildesk.spam.modelfile import N_FEATURES
from maildesk.spam.tokenize import SCRIPT_PREFIX, script_of

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
# How a mail is built (HTML only, charset, mailer, attachment types) changes with the
# years far more than what it says: a public corpus where nearly every HTML mail
# is spam would make HTML alone damning. Such tokens count, but at most this much.
STRUCTURE_PREFIXES = ("html:", "ct:", "charset:", "mailer:", "hdr:", "att:", "s:ALLCAPS", "s:bang")
MEMO_SIZE = 500_000  # tokens per memo; cleared when full

# Kinds of token. Words of a script are FIRST_SCRIPT + its index in SCRIPTS.
OTHER, STRUCTURE, MARKER, COMMON, FIRST_SCRIPT = 0, 1, 2, 3, 4
N_KINDS = FIRST_SCRIPT + len(SCRIPTS)
_LATIN = FIRST_SCRIPT + SCRIPTS.index("latin")
_SCRIPT_KIND = {name: FIRST_SCRIPT + i for i, name in enumerate(SCRIPTS)}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Evidence = tuple[float, int]  # (probability, kind)


def kind_of(token: str) -> int:
    if token.startswith(STRUCTURE_PREFIXES):
        return STRUCTURE
    if token.startswith(SCRIPT_PREFIX):
        return MARKER
    script = script_of(token)
    if script is None:
        return OTHER
    return COMMON if script == "common" else _SCRIPT_KIND[script]


class Columns:
    """Token -> HashingVectorizer column, memoised (hashing is most of a miss's cost).

    Safe under concurrent use: a thread only reads the shared memo through ``get``
    and fills its own misses from a local mapping.
    """

    def __init__(self) -> None:
        self._memo: dict[str, int] = {}
        self._hash: Callable[[str], int] | None = None

    def __call__(self, tokens: Sequence[str]) -> list[int]:
        memo = self._memo
        found = [memo.get(t, -1) for t in tokens]
        if -1 in found:
            murmur = self._murmur()
            pairs = list(zip(tokens, found, strict=True))
            fresh = {t: abs(murmur(t)) % N_FEATURES for t, i in pairs if i < 0}
            found = [i if i >= 0 else fresh[t] for t, i in pairs]
            if len(memo) > MEMO_SIZE:
                memo.clear()
            memo.update(fresh)
        return found

    def _murmur(self) -> Callable[[str], int]:
        """Imported on first use: scikit-learn costs about a second to import, and a
        daemon without a model (or a CLI command that never scores) does not need it."""
        if self._hash is None:
            from sklearn.utils import murmurhash3_32

            self._hash = murmurhash3_32
        return self._hash


@dataclass(frozen=True)
class Snapshot:
    """What scoring reads. Never changed but for its memo: learning builds a new one."""

    ham: FloatArray  # per feature: ham mails that held it
    spam: FloatArray  # per feature: spam mails that held it
    ham_total: float
    spam_total: float
    scripts: dict[str, tuple[float, float]]  # script -> (ham mails, spam mails) written in it
    version: str
    memo: dict[str, Evidence] = field(default_factory=dict, compare=False, repr=False)

    def script_known(self, script: str) -> bool:
        if script == "common":
            return True
        ham, spam = self.scripts.get(script, (0.0, 0.0))
        return min(ham, spam) >= MIN_SCRIPT_MAILS

    def probabilities(self, tokens: Sequence[str], columns: Columns) -> FloatArray:
        """Per token: its probability as evidence in this mail; 0.5 where it is none
        (script markers, words of a script not learned, every word when the mail is
        mostly written in such a script)."""
        memo = self.memo
        found = list(map(memo.get, tokens))
        if None in found:
            pairs = list(zip(tokens, found, strict=True))
            fresh = self._evidence([t for t, e in pairs if e is None], columns)
            found = [e if e is not None else fresh[t] for t, e in pairs]
            if len(memo) > MEMO_SIZE:
                memo.clear()
            memo.update(fresh)
        evidence: list[Evidence] = found  # type: ignore[assignment]  # no None left
        probabilities = np.fromiter((p for p, _ in evidence), np.float64, len(evidence))
        kinds = np.fromiter((k for _, k in evidence), np.intp, len(evidence))
        probabilities[self._neutral(kinds)] = 0.5
        return probabilities

    def _evidence(self, tokens: list[str], columns: Columns) -> dict[str, Evidence]:
        kinds = np.array([kind_of(t) for t in tokens], dtype=np.intp)
        indices = np.array(columns(tokens), dtype=np.intp)
        totals = self._totals[kinds]
        probabilities = token_probabilities(
            self.ham[indices], self.spam[indices], totals[:, 0], totals[:, 1]
        )
        structural = kinds == STRUCTURE
        probabilities[structural] = np.clip(
            probabilities[structural], 0.5 - STRUCTURE_CLAMP, 0.5 + STRUCTURE_CLAMP
        )
        evidence = zip(probabilities.tolist(), kinds.tolist(), strict=True)
        return dict(zip(tokens, evidence, strict=True))

    @cached_property
    def _totals(self) -> FloatArray:
        """Per kind: the (ham, spam) mails a count is out of: those of its script when
        the script is known, else all."""
        totals = np.tile([self.ham_total, self.spam_total], (N_KINDS, 1))
        for name, kind in _SCRIPT_KIND.items():
            if self.script_known(name):
                totals[kind] = self.scripts[name]
        return totals

    @cached_property
    def _known(self) -> npt.NDArray[np.bool_]:
        """Per kind: whether its words count (always for tokens that are not words)."""
        return np.array(
            [True] * FIRST_SCRIPT + [self.script_known(name) for name in SCRIPTS], dtype=bool
        )

    def _neutral(self, kinds: IntArray) -> npt.NDArray[np.bool_]:
        known = self._known
        marker = kinds == MARKER
        neutral: npt.NDArray[np.bool_] = (
            marker | ~known[kinds] if known[_main_script(kinds)] else marker | (kinds >= COMMON)
        )
        return neutral


def _main_script(kinds: IntArray) -> int:
    """The kind of the script most words are written in (the first seen of a tie);
    latin when there is no word of a script."""
    scripts = kinds[kinds >= FIRST_SCRIPT]
    if not scripts.size:
        return _LATIN
    counts = np.bincount(scripts, minlength=N_KINDS)
    tied = np.flatnonzero(counts == counts.max())
    if tied.size == 1:
        return int(tied[0])
    return int(scripts[np.isin(scripts, tied)][0])
