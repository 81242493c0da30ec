"""The spam filter against the shared corpora: the honest time split, and later mail.

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

from maildesk.parse import parse_mail
from maildesk.sources import iter_messages
from maildesk.spam import SpamFilter, SpamThresholds
from maildesk.spam.cli import spam_app

CORPORA = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora"
SPAMASSASSIN = CORPORA / "spamassassin"
MAIL_PARSER = CORPORA / "mime" / "mail-parser"
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
    assert report["fp_rate"] <= 0.002  # ham in the spam band
    assert report["fn_rate"] <= 0.15  # spam in the ham band (missed)
    assert report["auc"] >= 0.99
    # The bands must still decide: not everything parked in unsure.
    assert report["unsure_ham"] <= 0.02 * report["ham"]
    assert report["recall"] >= 0.2  # spam caught outright
    assert not list(tmp_path.glob("*.npz"))  # the live model is untouched


def test_later_spam_and_phishing_from_other_sources() -> None:
    """Trained on the whole 2002 corpus; scored: 2010s spam, phishing and legitimate mail."""
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    spam_filter = SpamFilter(path=Path("unsaved.npz"), thresholds=SpamThresholds())
    mails, labels = [], []
    for folder, is_spam in (("ham", False), ("spam", True)):
        for _, raw in iter_messages([SPAMASSASSIN / folder]):
            mails.append(parse_mail(raw))
            labels.append(is_spam)
    spam_filter.learn(mails, labels, save=False)

    def bands(names: tuple[str, ...]) -> dict[str, str]:
        found = [MAIL_PARSER / n for n in names if (MAIL_PARSER / n).exists()]
        assert len(found) == len(names), "corpora/mime/mail-parser changed"
        return {
            name.split("/")[-1]: spam_filter.score(parse_mail(raw)).band
            for name, raw in iter_messages(found)
        }

    spam, ham = bands(MIME_SPAM), bands(MIME_HAM)
    missed = [name for name, band in spam.items() if band == "ham"]
    flagged = [name for name, band in ham.items() if band == "spam"]
    assert len(missed) <= 2, missed  # 15% of 13
    assert not flagged, flagged
    assert spam["mail_test_16"] == "spam"  # GTUBE
