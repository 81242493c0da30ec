"""How good is a spam filter: metrics over three bands, cross-validation, the time split.

Definitions (the issue's, which fit a filter with an unsure band):

* ``fp_rate``: ham that lands in the *spam* band, over all ham.
* ``fn_rate``: *missed* spam, i.e. spam that lands in the *ham* band, over all
  spam. Unsure spam is not missed: it waits for staff.
* ``precision`` / ``recall``: of the spam band, and of spam caught outright.
* ``accuracy``: mails in their own band (ham in ham, spam in spam) over all
  mails; unsure counts as not accurate. ``accuracy_at_half`` is the usual
  two-class accuracy with a cut at probability 0.5.
* ``auc``: ROC AUC of the probabilities (needs both classes).

The time split is the honest check: a model trained on the older mails of a
corpus and tested on the newer ones cannot lean on when the corpus was
collected.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from maildesk.core.parse import InboundMail
from maildesk.spam.model import SpamFilter, SpamThresholds
from maildesk.spam.tokenize import tokenize

BANDS = ("ham", "unsure", "spam")


@dataclass(frozen=True)
class Sample:
    """One labelled mail, tokenized once."""

    name: str
    mail: InboundMail
    is_spam: bool
    tokens: list[str] = field(repr=False)

    @classmethod
    def of(cls, name: str, mail: InboundMail, is_spam: bool) -> Sample:
        return cls(name, mail, is_spam, tokenize(mail))


@dataclass(frozen=True)
class Scored:
    name: str
    is_spam: bool
    probability: float
    band: str


@dataclass(frozen=True)
class EvalReport:
    mails: int
    ham: int
    spam: int
    accuracy: float
    accuracy_at_half: float
    precision: float
    recall: float
    fp_rate: float
    fn_rate: float
    unsure: int
    unsure_ham: int
    unsure_spam: int
    auc: float | None
    confusion: dict[str, dict[str, int]]  # actual class -> band -> count
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    train_seconds: float | None = None
    train_mails: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def report(
    scored: Sequence[Scored],
    latencies: Sequence[float] = (),
    train_seconds: float | None = None,
    train_mails: int | None = None,
) -> EvalReport:
    """Metrics over scored mails (probabilities may come from any filter)."""
    confusion = {actual: dict.fromkeys(BANDS, 0) for actual in ("ham", "spam")}
    for item in scored:
        confusion["spam" if item.is_spam else "ham"][item.band] += 1
    ham, spam = sum(confusion["ham"].values()), sum(confusion["spam"].values())
    flagged = confusion["ham"]["spam"] + confusion["spam"]["spam"]
    labels = [item.is_spam for item in scored]
    probabilities = [item.probability for item in scored]
    at_half = sum((p >= 0.5) == y for p, y in zip(probabilities, labels, strict=True))
    auc = float(roc_auc_score(labels, probabilities)) if ham and spam else None
    return EvalReport(
        mails=ham + spam,
        ham=ham,
        spam=spam,
        accuracy=_ratio(confusion["ham"]["ham"] + confusion["spam"]["spam"], ham + spam),
        accuracy_at_half=_ratio(at_half, ham + spam),
        precision=_ratio(confusion["spam"]["spam"], flagged),
        recall=_ratio(confusion["spam"]["spam"], spam),
        fp_rate=_ratio(confusion["ham"]["spam"], ham),
        fn_rate=_ratio(confusion["spam"]["ham"], spam),
        unsure=confusion["ham"]["unsure"] + confusion["spam"]["unsure"],
        unsure_ham=confusion["ham"]["unsure"],
        unsure_spam=confusion["spam"]["unsure"],
        auc=auc,
        confusion=confusion,
        latency_ms_p50=_quantile_ms(latencies, 0.50),
        latency_ms_p99=_quantile_ms(latencies, 0.99),
        train_seconds=train_seconds,
        train_mails=train_mails,
    )


def score_all(
    spam_filter: SpamFilter, samples: Sequence[Sample]
) -> tuple[list[Scored], list[float]]:
    """Score every sample through the public path (tokenizing included); timings in seconds."""
    scored: list[Scored] = []
    latencies: list[float] = []
    for sample in samples:
        start = time.perf_counter()
        verdict = spam_filter.score(sample.mail)
        latencies.append(time.perf_counter() - start)
        probability = 0.0 if verdict.probability is None else verdict.probability
        scored.append(Scored(sample.name, sample.is_spam, probability, verdict.band))
    return scored, latencies


def train_fresh(samples: Sequence[Sample], thresholds: SpamThresholds) -> tuple[SpamFilter, float]:
    """A new in-memory filter trained on ``samples`` (never saved); and the seconds it took."""
    spam_filter = SpamFilter(path=Path("unsaved-spam-model.npz"), thresholds=thresholds)
    start = time.perf_counter()
    spam_filter.learn_tokens([s.tokens for s in samples], [s.is_spam for s in samples], save=False)
    return spam_filter, time.perf_counter() - start


def evaluate_split(
    train: Sequence[Sample], test: Sequence[Sample], thresholds: SpamThresholds
) -> EvalReport:
    spam_filter, seconds = train_fresh(train, thresholds)
    scored, latencies = score_all(spam_filter, test)
    return report(scored, latencies, seconds, len(train))


def cross_validate(
    samples: Sequence[Sample],
    thresholds: SpamThresholds,
    folds: int,
    on_fold: Callable[[], None] | None = None,
) -> EvalReport:
    """Stratified k-fold with fresh models; metrics pooled over all folds."""
    scored: list[Scored] = []
    latencies: list[float] = []
    seconds: list[float] = []
    for train, test in kfold(samples, folds):
        spam_filter, took = train_fresh(train, thresholds)
        fold_scored, fold_latencies = score_all(spam_filter, test)
        scored.extend(fold_scored)
        latencies.extend(fold_latencies)
        seconds.append(took)
        if on_fold:
            on_fold()
    train_mails = len(samples) - len(samples) // folds
    return report(scored, latencies, statistics.fmean(seconds), train_mails)


def kfold(samples: Sequence[Sample], folds: int) -> Iterator[tuple[list[Sample], list[Sample]]]:
    if folds < 2:
        raise ValueError("--folds must be at least 2")
    labels = np.array([s.is_spam for s in samples])
    if min(int(labels.sum()), int((~labels).sum())) < folds:
        raise ValueError(f"need at least {folds} ham and {folds} spam mails for {folds} folds")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train_index, test_index in splitter.split(np.zeros(len(samples)), labels):
        yield [samples[i] for i in train_index], [samples[i] for i in test_index]


def time_split(samples: Sequence[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Train on the oldest ``fraction`` of each class by Date header, test on the rest.

    Split per class, so the test set holds both classes even when ham and spam
    were collected over different months. Mails without a usable Date count
    as the oldest (they train, never test).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("--time-split must be between 0 and 1 (exclusive)")
    train: list[Sample] = []
    test: list[Sample] = []
    for is_spam in (False, True):
        group = sorted((s for s in samples if s.is_spam == is_spam), key=_age)
        cut = round(len(group) * fraction)
        train.extend(group[:cut])
        test.extend(group[cut:])
    return train, test


def _age(sample: Sample) -> tuple[int, float, str]:
    date = sample.mail.date
    if date is None or not 1990 <= date.year <= 2100:
        return (0, 0.0, sample.name)
    return (1, date.timestamp(), sample.name)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _quantile_ms(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.asarray(values), q)) * 1000.0


Learning = Literal["corrections", "sure"]
LEARNING: tuple[Learning, ...] = ("corrections", "sure")


@dataclass(frozen=True)
class OnlineRates:
    """Where ham and spam landed over a stretch of the stream, as staff see it."""

    mails: int
    ham: int
    spam: int
    ham_quarantined: float  # ham in the spam band
    ham_held: float  # ham in the unsure band: the customer waits for a human
    spam_through: float  # spam in the ham band
    spam_unsure: float  # spam in the unsure band: a "[possible spam]" mail to staff
    learned: int  # staff decisions learned in this stretch (unsure or wrong)
    self_learned: int = 0  # sure verdicts learned without anyone acting ("sure" learning)


@dataclass
class _Tally:
    bands: dict[tuple[bool, str], int] = field(default_factory=dict)
    learned: int = 0
    self_learned: int = 0

    def add(self, is_spam: bool, band: str, learned: bool, self_learned: bool) -> None:
        key = (is_spam, band)
        self.bands[key] = self.bands.get(key, 0) + 1
        self.learned += learned
        self.self_learned += self_learned

    def rates(self) -> OnlineRates:
        def count(is_spam: bool, band: str | None = None) -> int:
            return sum(n for (s, b), n in self.bands.items() if s == is_spam and band in (None, b))

        ham, spam = count(False), count(True)
        return OnlineRates(
            mails=ham + spam,
            ham=ham,
            spam=spam,
            ham_quarantined=_ratio(count(False, "spam"), ham),
            ham_held=_ratio(count(False, "unsure"), ham),
            spam_through=_ratio(count(True, "ham"), spam),
            spam_unsure=_ratio(count(True, "unsure"), spam),
            learned=self.learned,
            self_learned=self.self_learned,
        )


@dataclass(frozen=True)
class OnlineReport:
    checkpoints: list[OnlineRates]  # cumulative, every ``every`` mails and at the end
    after_warmup: OnlineRates | None  # the mails after the first ``warmup`` only
    warmup: int
    learning: Learning = "corrections"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_online(
    samples: Sequence[Sample],
    thresholds: SpamThresholds,
    every: int = 500,
    warmup: int = 1000,
    on_mail: Callable[[], None] | None = None,
    learning: Learning = "corrections",
) -> OnlineReport:
    """A fresh filter meets the mails in Date order, as a new install would.

    Each mail is scored first; only then is anything learned about it, so no
    mail is ever scored by a model that knows it. What is learned depends on
    ``learning``:

    * ``"corrections"``: its true label, only where staff would have acted: the
      mail was unsure, or in the wrong band (spam let through is marked spam,
      ham quarantined is released).
    * ``"sure"``: as above, and a mail in a sure band (ham or spam) is learned
      with the filter's own verdict at once, as a daemon learning from its
      traffic would. When staff correct such a mail, the verdict is forgotten
      and the true label learned (``forget_tokens``): a mistake is not left to
      reinforce itself, the known failure of training on everything.

    A cold filter (not both classes yet) treats every mail as ham and learns
    every one, as ``train_on_error`` does.
    """
    if learning not in LEARNING:
        raise ValueError(f"learning must be one of {', '.join(LEARNING)}, not {learning!r}")
    spam_filter = SpamFilter(path=Path("unsaved-spam-model.npz"), thresholds=thresholds)
    total, after = _Tally(), _Tally()
    checkpoints: list[OnlineRates] = []
    ordered = sorted(samples, key=_age)
    for position, sample in enumerate(ordered, start=1):
        verdict = spam_filter.score_tokens(sample.tokens)
        expected = "spam" if sample.is_spam else "ham"
        act = not verdict.scored or verdict.band != expected
        guess = learning == "sure" and verdict.scored and verdict.band != "unsure"
        if guess:
            spam_filter.learn_tokens([sample.tokens], [verdict.band == "spam"], save=False)
        if guess and act:  # staff correct a sure verdict: move the mail to its class
            spam_filter.forget_tokens([sample.tokens], [verdict.band == "spam"], save=False)
        if act:
            spam_filter.learn_tokens([sample.tokens], [sample.is_spam], save=False)
        total.add(sample.is_spam, verdict.band, act, guess and not act)
        if position > warmup:
            after.add(sample.is_spam, verdict.band, act, guess and not act)
        if position % every == 0 or position == len(ordered):
            checkpoints.append(total.rates())
        if on_mail:
            on_mail()
    return OnlineReport(checkpoints, after.rates() if after.bands else None, warmup, learning)
