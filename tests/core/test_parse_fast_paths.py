"""The shortcuts of parsing and spam scoring give what the long way gives, on real mail.

Each shortcut is held against the code it stands in for, over every mail of the
shared corpora: mail-parser's MIME walk on the root's MIME headers only, token
columns hashed one by one instead of through scikit-learn's HashingVectorizer,
the per-snapshot memo of token evidence, and plain recipient lists read by
``email.utils.getaddresses`` instead of the RFC 5322 parser.
"""

from __future__ import annotations

import email
import email.message
import logging
from pathlib import Path

import mailparser
import pytest

from maildesk.core.address import parse_addresses
from maildesk.core.mimeparts import attachments_of, bodies, needs_mail_parser
from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages
from maildesk.spam import SpamFilter, SpamThresholds
from maildesk.spam.evidence import Columns
from maildesk.spam.modelfile import N_FEATURES
from maildesk.spam.tokenize import tokenize

SOURCES = (
    Path("spamassassin") / "ham",
    Path("spamassassin") / "spam",
    Path("mime"),
    Path("threads") / "blinux-list-threads.mbox",
)


@pytest.fixture(scope="module")
def raws(corpora: Path) -> list[bytes]:
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    return [raw for _, raw in iter_messages([corpora / source for source in SOURCES])]


def test_mime_view_finds_what_mail_parser_finds_in_the_whole_mail(raws: list[bytes]) -> None:
    checked = 0
    for raw in raws:
        message = email.message_from_bytes(raw)
        if not needs_mail_parser(message):
            continue
        try:
            full = mailparser.MailParser(message)
        except Exception:
            continue
        mail = parse_mail(raw)
        assert mail.attachments == tuple(attachments_of(full.attachments))
        if not any(bodies(message)):
            assert mail.text.strip() or not [t for t in full.text_plain if t.strip()]
        assert "From" in dict(message.items()) or mail.from_addr == ""  # root unchanged
        checked += 1
    assert checked > 50


def test_token_columns_are_hashing_vectorizer_columns(raws: list[bytes]) -> None:
    from sklearn.feature_extraction.text import HashingVectorizer

    tokens = sorted({t for raw in raws[::7] for t in tokenize(parse_mail(raw))})
    vectorizer = HashingVectorizer(
        analyzer=lambda document: document,
        n_features=N_FEATURES,
        alternate_sign=False,
        binary=True,
        norm=None,
    )
    expected = vectorizer.transform([[t] for t in tokens]).indices.tolist()
    assert Columns()(tokens) == expected


def test_scores_from_the_memo_equal_scores_computed_afresh(raws: list[bytes]) -> None:
    mails = [parse_mail(raw) for raw in raws[::5]]
    documents = [tokenize(mail) for mail in mails]
    labels = [i % 3 == 0 for i in range(len(mails))]  # any labels: both classes, many tokens
    warm = SpamFilter(path=Path("unsaved.npz"), thresholds=SpamThresholds())
    warm.learn_tokens(documents, labels, save=False)
    first = [warm.score_tokens(tokens) for tokens in documents]
    again = [warm.score_tokens(tokens) for tokens in reversed(documents)]
    assert first == again[::-1]
    for tokens, verdict in zip(documents[:200], first, strict=False):
        fresh = SpamFilter(path=Path("unsaved.npz"), thresholds=SpamThresholds())
        fresh.learn_tokens(documents, labels, save=False)
        assert fresh.score_tokens(tokens) == verdict


def test_plain_recipient_lists_read_as_the_rfc5322_parser_reads_them(raws: list[bytes]) -> None:
    """Every address header of every corpus mail: the To/Cc reading (getaddresses where the
    list is plain) gives the same addresses and the same refusals as the strict parser."""
    values = 0
    for raw in raws:
        message = email.message_from_bytes(raw)
        for header in ("To", "Cc", "From", "Reply-To"):
            for value in message.get_all(header, []):
                recipients = parse_addresses(header, [value], names=False)
                strict = parse_addresses(header, [value])  # with names: always the RFC 5322 one
                assert [a for _, a in recipients.addresses] == [a for _, a in strict.addresses]
                assert recipients.problems == strict.problems
                values += 1
    assert values > 5000
