"""The spam filter against the shared corpora: the honest time split, later mail, mail
from another source and year, Russian customers, and the online stream.

The corpora live beside the repository (../shared/corpora). A fresh clone without
them skips these tests; CI (env CI set) must have them and fails otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maildesk.cli.spam import load_samples, spam_app
from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages
from maildesk.spam import SpamFilter, SpamThresholds
from maildesk.spam.evaluate import OnlineReport, Sample, evaluate_online
from tests.conftest import CORPORA
from tests.russian_mail import constructed, quoting_customers

SPAMASSASSIN = CORPORA / "spamassassin"
MAIL_PARSER = CORPORA / "mime" / "mail-parser"
THREADS = CORPORA / "threads" / "blinux-list-threads.mbox"
# Labels of corpora/mime/mail-parser, from reading each mail.
MIME_SPAM = (
    "mail_test_1",
    "mail_test_3",
    "mail_test_4",
    "mail_test_6",
    "mail_test_8",
    "mail_test_9",
    "mail_test_11",
    "mail_test_12",
    "mail_test_15",
    "mail_test_16",
    "mail_test_17",
    "mail_malformed_1",
    "mail_malformed_3",
)  # tax/invoice malware, phishing, Chinese invoice spam, promotions, GTUBE
MIME_HAM = (
    "mail_test_2",
    "mail_test_7",
    "mail_test_10",
    "mail_test_13",
    "mail_test_14",
    "mail_test_18",
    "mail_test_19",
    "mail_malformed_2",
)  # weather bulletin, an accountant's mail, vendor newsletters, tests, a bounce


@pytest.fixture(scope="module", autouse=True)
def corpus_present() -> None:
    if (SPAMASSASSIN / "ham").is_dir() and (SPAMASSASSIN / "spam").is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the corpora are missing at {CORPORA.resolve()}")
    pytest.skip(f"no corpora at {CORPORA.resolve()} (a fresh clone)")


def test_time_split_meets_the_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained on the oldest 70% of each class, tested on the newer mail, as the issue asks."""
    monkeypatch.setenv("MAILDESK_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        spam_app,
        [
            "eval",
            "--ham",
            str(SPAMASSASSIN / "ham"),
            "--spam",
            str(SPAMASSASSIN / "spam"),
            "--time-split",
            "0.7",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ham"], report["spam"]) == (750, 150)
    # The aims for mail the filter never saw.
    assert report["fp_rate"] <= 0.001  # ham quarantined (spam band)
    assert report["unsure_ham"] <= 0.01 * report["ham"]  # ham held: the customer waits
    assert report["fn_rate"] <= 0.10  # spam let through as ham
    assert report["unsure_spam"] <= 0.30 * report["spam"]  # a "[possible spam]" mail each
    assert report["auc"] >= 0.99
    assert not list(tmp_path.glob("*.npz"))  # the live model is untouched


@pytest.fixture(scope="module")
def corpus() -> list[Sample]:
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    return load_samples([SPAMASSASSIN / "ham"], [SPAMASSASSIN / "spam"])


@pytest.fixture(scope="module")
def whole_corpus_filter(corpus: list[Sample]) -> SpamFilter:
    """What a new user has after `maildesk spam train` on the (English) corpus."""
    spam_filter = SpamFilter(path=Path("unsaved.npz"), thresholds=SpamThresholds())
    spam_filter.learn_tokens([s.tokens for s in corpus], [s.is_spam for s in corpus], save=False)
    return spam_filter


def bands_of(spam_filter: SpamFilter, raws: list[bytes]) -> list[str]:
    return [spam_filter.score(parse_mail(raw)).band for raw in raws]


def test_russian_customers_are_not_held(whole_corpus_filter: SpamFilter) -> None:
    """Trained on English only: Russian customer mail (written requests, and real Russian
    prose from the mime corpus pasted into questions) is confirmed, not held."""
    raws = constructed() + list(quoting_customers(MAIL_PARSER))
    bands = bands_of(whole_corpus_filter, raws)
    assert len(raws) >= 100
    assert bands.count("spam") == 0
    assert bands.count("unsure") <= 0.01 * len(raws), bands
    first = whole_corpus_filter.score(parse_mail(raws[0]))  # "Не приходит счёт за ноябрь"
    assert first.band == "ham" and first.probability is not None and first.probability < 0.5


def test_ham_from_another_list_and_decade(whole_corpus_filter: SpamFilter) -> None:
    """blinux-list, 2019-2026: another source and 20 years later than the training mail."""
    raws = [raw for _, raw in iter_messages([THREADS])]
    bands = bands_of(whole_corpus_filter, raws)
    assert len(raws) == 382
    assert bands.count("spam") == 0
    assert bands.count("unsure") <= 0.01 * len(raws)


@pytest.fixture(scope="module")
def online(corpus: list[Sample]) -> OnlineReport:
    return evaluate_online(corpus, SpamThresholds())


def test_online_learning_from_staff_corrections(online: OnlineReport) -> None:
    """Date order, learning only unsure or wrong mail: the issue's aims after 1,000 mails."""
    report = online
    assert [c.mails for c in report.checkpoints] == [500, 1000, 1500, 2000, 2500, 3000]
    after = report.after_warmup
    assert after is not None and after.mails == 2000
    assert after.spam_unsure <= 0.15
    assert after.ham_quarantined <= 0.005
    assert after.spam_through <= 0.10
    assert after.learned <= 0.10 * after.mails  # staff act on one mail in ten at most


@pytest.fixture(scope="module")
def online_sure(corpus: list[Sample]) -> OnlineReport:
    return evaluate_online(corpus, SpamThresholds(), learning="sure")


def test_online_ham_held_aim(online: OnlineReport, online_sure: OnlineReport) -> None:
    """The issue's aims after 1,000 mails, learning sure verdicts at once as well as staff
    decisions: staff decisions alone learn too little ham (about one ham in twenty after
    the cold start), and 4% of ham stays held."""
    after = online_sure.after_warmup
    assert after is not None and after.mails == 2000
    assert after.ham_held <= 0.01
    assert after.spam_unsure <= 0.15
    assert after.ham_quarantined <= 0.005
    assert after.spam_through <= 0.10
    assert after.learned <= 0.10 * after.mails  # staff act on one mail in ten at most
    corrections = online.after_warmup
    assert corrections is not None and corrections.ham_held > after.ham_held


def test_later_spam_and_phishing_from_other_sources(whole_corpus_filter: SpamFilter) -> None:
    """Trained on the whole 2002 corpus; scored: 2010s spam, phishing and legitimate mail.

    Most of this spam is Russian, Chinese or Spanish, scripts or languages with no ham in
    the corpus: by design such words are no clue until staff have marked some of both
    kinds, so only legitimate mail never flagged, and GTUBE, are required here.
    """
    spam_filter = whole_corpus_filter

    def bands(names: tuple[str, ...]) -> dict[str, str]:
        found = [MAIL_PARSER / n for n in names if (MAIL_PARSER / n).exists()]
        assert len(found) == len(names), "corpora/mime/mail-parser changed"
        return {
            name.split("/")[-1]: spam_filter.score(parse_mail(raw)).band
            for name, raw in iter_messages(found)
        }

    spam, ham = bands(MIME_SPAM), bands(MIME_HAM)
    flagged = [name for name, band in ham.items() if band == "spam"]
    assert not flagged, flagged
    assert spam["mail_test_16"] == "spam"  # GTUBE
