"""SpamFilter: bands, cold start, learning, train-on-error, persistence without pickle."""

from __future__ import annotations

import threading
import zipfile
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest

from maildesk.core.parse import InboundMail, parse_mail
from maildesk.spam import SpamFilter, SpamModelError, SpamThresholds, SpamVerdict
from maildesk.spam.live import LiveSpamFilter
from maildesk.spam.model import COLD_START
from maildesk.spam.tokenize import tokenize

HAM_TEXTS = [
    "Hi team, the build on the staging server failed again after the kernel patch. "
    "Could you look at the logs before the meeting tomorrow? Thanks, Ann",
    "Meeting notes: we agreed to move the release to Thursday and review the parser "
    "patch together. Please update the ticket with your estimate.",
    "Hello, my invoice for March is attached as discussed on the phone. Could you confirm "
    "the payment date? Regards, Boris",
    "The backup job reported a checksum mismatch on the archive volume. I restarted it "
    "and will check the logs in the morning.",
]
SPAM_TEXTS = [
    "CONGRATULATIONS! You have been selected to receive a FREE prize. Click here now to "
    "claim your cash bonus, limited offer, act now, 100% guaranteed!!!",
    "Lose weight fast with our miracle pills. Order now and get a free bonus bottle. "
    "Limited time offer, click here to order, satisfaction guaranteed.",
    "Make money fast from home! Earn $5000 per week with this amazing opportunity. "
    "No experience needed, click here to start earning cash today.",
    "Cheap viagra and cialis online, no prescription needed. Order now, discreet "
    "shipping, lowest prices guaranteed, click here for the special offer.",
]


def build(
    body: str,
    *,
    subject: str = "Hello",
    sender: str = "Ann Smith <ann@example.org>",
    html: str | None = None,
    html_only: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "support@example.com"
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Sep 2024 10:00:00 +0000"
    message["Message-ID"] = f"<{abs(hash(body))}@example.org>"
    for name, value in (headers or {}).items():
        message[name] = value
    if html_only and html is not None:
        message.set_content(html, subtype="html")
    else:
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
    return message.as_bytes()


def mail(body: str, **kwargs: object) -> InboundMail:
    return parse_mail(build(body, **kwargs))  # type: ignore[arg-type]


def corpus() -> tuple[list[InboundMail], list[bool]]:
    """Repeated variations of the texts above: enough for the filter to learn words."""
    mails: list[InboundMail] = []
    labels: list[bool] = []
    for round_ in range(5):
        for text in HAM_TEXTS:
            mails.append(mail(f"{text} (note {round_})", subject=f"Re: status {round_}"))
            labels.append(False)
        for text in SPAM_TEXTS:
            mails.append(
                mail(
                    f"{text} Offer {round_}.",
                    subject=f"FREE offer {round_}!!!",
                    sender="Deals <deals@promo-mail.biz>",
                )
            )
            labels.append(True)
    return mails, labels


@pytest.fixture
def trained(tmp_path: Path) -> SpamFilter:
    spam_filter = SpamFilter.load(tmp_path / "model.npz", SpamThresholds())
    mails, labels = corpus()
    spam_filter.learn(mails, labels)
    return spam_filter


SPAMMY = "Click here now to claim your FREE cash prize, limited offer, order now!!!"
HAMMY = "Could you look at the staging logs before the meeting? The parser patch failed."


@pytest.mark.parametrize(
    ("probability", "band"),
    [
        (0.0, "ham"),
        (0.5, "ham"),
        (0.599, "ham"),
        (0.6, "unsure"),
        (0.95, "unsure"),
        (0.951, "spam"),
        (1.0, "spam"),
    ],
)
def test_default_bands(probability: float, band: str) -> None:
    assert SpamThresholds().band(probability) == band


@pytest.mark.parametrize(("ham_below", "spam_above"), [(0.6, 0.5), (-0.1, 0.5), (0.2, 1.5)])
def test_thresholds_must_be_ordered_probabilities(ham_below: float, spam_above: float) -> None:
    with pytest.raises(ValueError):
        SpamThresholds(ham_below, spam_above)


def test_cold_start_every_mail_is_ham_and_unscored(tmp_path: Path) -> None:
    spam_filter = SpamFilter.load(tmp_path / "missing.npz", SpamThresholds())
    verdict = spam_filter.score(mail(SPAMMY, subject="FREE!!!"))
    assert verdict == SpamVerdict(probability=None, band="ham", model_version=None, top_tokens=())
    assert not verdict.scored and not spam_filter.trained


def test_one_class_only_is_still_cold(tmp_path: Path) -> None:
    spam_filter = SpamFilter.load(tmp_path / "model.npz", SpamThresholds())
    spam_filter.learn([mail(HAMMY)], [False])
    assert spam_filter.score(mail(SPAMMY)).probability is None
    assert (tmp_path / "model.npz").exists()


def test_learned_model_separates_and_explains(trained: SpamFilter) -> None:
    spam = trained.score(mail(SPAMMY, subject="FREE offer!!!", sender="x@promo-mail.biz"))
    ham = trained.score(mail(HAMMY, subject="Re: status"))
    assert spam.band == "spam" and ham.band == "ham"
    assert spam.probability is not None and ham.probability is not None
    assert spam.probability > 0.95 > 0.6 > ham.probability
    assert spam.model_version == ham.model_version == trained.model_version
    assert spam.model_version is not None and spam.model_version.startswith("chi2-t")
    weights = dict(spam.top_tokens)
    assert weights["free"] > 0 and weights["click"] > 0
    assert all(weight < 0 for token, weight in ham.top_tokens if token in ("staging", "logs"))


def test_gtube_is_spam_once_trained(trained: SpamFilter) -> None:
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    assert trained.score(mail(f"{HAMMY}\n{gtube}\n")).band == "spam"


def test_persistence_round_trip_is_not_a_pickle(trained: SpamFilter, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    sample = mail(SPAMMY + " " + HAMMY)
    before = trained.score(sample)
    reloaded = SpamFilter.load(path, SpamThresholds())
    assert reloaded.score(sample) == before
    assert reloaded.class_counts() == trained.class_counts() == (20, 20)
    with np.load(path, allow_pickle=False) as data:  # raises on any object (pickled) array
        arrays = {name: data[name] for name in data.files}
    assert all(a.dtype.kind != "O" for a in arrays.values())
    assert {"feature_count", "class_count", "n_features", "tokenizer_version"} <= set(arrays)
    with zipfile.ZipFile(path) as archive:  # .npy members only: nothing to unpickle
        assert all(name.endswith(".npy") for name in archive.namelist())
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left


def test_learning_continues_after_reload(trained: SpamFilter, tmp_path: Path) -> None:
    reloaded = SpamFilter.load(tmp_path / "model.npz", SpamThresholds())
    reloaded.learn([mail("one more ham about the parser patch")], [False])
    assert reloaded.class_counts() == (21, 20)
    assert SpamFilter.load(tmp_path / "model.npz", SpamThresholds()).class_counts() == (21, 20)
    assert reloaded.model_version != trained.model_version


def test_failed_save_keeps_the_previous_model(
    trained: SpamFilter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        trained.learn([mail(HAMMY)], [False])
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert SpamFilter.load(tmp_path / "model.npz", SpamThresholds()).class_counts() == (20, 20)


def test_learn_without_save_leaves_disk_alone(tmp_path: Path) -> None:
    spam_filter = SpamFilter.load(tmp_path / "model.npz", SpamThresholds())
    mails, labels = corpus()
    spam_filter.learn(mails, labels, save=False)
    assert spam_filter.trained and not (tmp_path / "model.npz").exists()


def test_learn_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        SpamFilter.load(tmp_path / "m.npz", SpamThresholds()).learn([mail(HAMMY)], [])


@pytest.mark.parametrize(
    "content", [b"not a zip", b"PK\x03\x04broken", b""], ids=["text", "zip", "empty"]
)
def test_damaged_model_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(SpamModelError, match=r"model\.npz"):
        SpamFilter.load(path, SpamThresholds())


def test_model_from_another_tokenizer_is_refused(trained: SpamFilter, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["tokenizer_version"] = np.int64(999)
    np.savez(path, **arrays)
    with pytest.raises(SpamModelError, match="tokenizer v999"):
        SpamFilter.load(path, SpamThresholds())


def test_train_on_error_learns_only_disagreements(trained: SpamFilter) -> None:
    spammy = mail(SPAMMY, subject="FREE!!!", sender="x@promo-mail.biz")
    assert trained.train_on_error(spammy, is_spam=True) is False
    assert trained.class_counts() == (20, 20)
    assert trained.train_on_error(mail(HAMMY), is_spam=True) is True  # a correction
    assert trained.class_counts() == (20, 21)


def test_train_on_error_learns_unsure_mail(trained: SpamFilter) -> None:
    mixed = mail(SPAMMY, subject="FREE!!!")  # spam words from a sender known for ham
    assert trained.score(mixed).band == "unsure"
    assert trained.train_on_error(mixed, is_spam=False) is True
    assert trained.class_counts() == (21, 20)


def test_words_never_seen_do_not_hold_a_mail(trained: SpamFilter) -> None:
    """No clue is no reason to keep a customer waiting: ham band, near the ham end."""
    neutral = trained.score(
        mail("zebra quantum velvet", subject="xylophone", sender="z@neutral.example")
    )
    assert neutral.band == "ham" and neutral.top_tokens == ()
    assert neutral.probability is not None and neutral.probability < 0.5


def test_train_on_error_learns_everything_while_cold(tmp_path: Path) -> None:
    spam_filter = SpamFilter.load(tmp_path / "model.npz", SpamThresholds())
    assert spam_filter.train_on_error(mail(HAMMY), is_spam=False) is True
    assert spam_filter.train_on_error(mail(SPAMMY), is_spam=True) is True
    assert spam_filter.trained


def test_scoring_while_learning_from_another_thread(trained: SpamFilter) -> None:
    mails, labels = corpus()
    errors: list[BaseException] = []
    verdicts: list[SpamVerdict] = []

    def score_many() -> None:
        try:
            verdicts.extend(trained.score(m) for m in mails * 3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=score_many) for _ in range(3)]
    for reader in readers:
        reader.start()
    for _ in range(3):
        trained.learn(mails[:4], labels[:4], save=False)
    for reader in readers:
        reader.join()
    assert not errors and len(verdicts) == 3 * 3 * len(mails)
    assert all(v.probability is not None for v in verdicts)


RUSSIAN_HAM = "Здравствуйте! Не приходит счёт за ноябрь, проверьте, пожалуйста, адрес. Анна"
RUSSIAN_SPAM = "Только сегодня! Бесплатный выигрыш, жмите ссылку и получите приз, скидка 90%"


def russian(body: str, n: int, sender: str = "Анна <anna@yandex.ru>") -> InboundMail:
    return mail(f"{body} (№{n})", subject=f"Письмо {n}", sender=sender)


def test_a_script_never_learned_as_ham_does_not_move_mail_towards_spam(
    trained: SpamFilter,
) -> None:
    """Russian words seen only in spam so far say nothing about a Russian customer."""
    for n in range(3):
        trained.learn([russian(RUSSIAN_SPAM, n, "Promo <x@promo-mail.biz>")], [True])
    customer = trained.score(russian(RUSSIAN_HAM, 99))
    assert customer.band == "ham", customer
    assert not [t for t, _ in customer.top_tokens if t.isalpha()]  # no word was a clue


def test_a_script_counts_once_staff_taught_both_classes(trained: SpamFilter) -> None:
    def spam_score() -> float:
        verdict = trained.score(russian(RUSSIAN_SPAM, 99, "Промо <noreply@shop.example>"))
        assert verdict.probability is not None
        return verdict.probability

    before = spam_score()
    for n in range(5):  # MIN_SCRIPT_MAILS of each class, as staff mark them
        trained.learn([russian(RUSSIAN_SPAM, n, f"Promo <p{n}@deals.example>")], [True])
        trained.learn([russian(RUSSIAN_HAM, n, f"Клиент <c{n}@mail.example>")], [False])
    assert spam_score() > max(before, 0.95)
    assert trained.score(russian(RUSSIAN_HAM, 99)).band == "ham"


def test_live_filter_keeps_running_on_a_model_from_an_older_maildesk(
    trained: SpamFilter, tmp_path: Path
) -> None:
    """An old model file is logged (retrain), mail stays unscored ham; a retrained one loads."""
    path = tmp_path / "model.npz"
    good = path.read_bytes()
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["tokenizer_version"] = np.int64(1)
    np.savez(path, **arrays)
    live = LiveSpamFilter(path, SpamThresholds())
    assert not live.current().trained
    assert live.current().score(mail(SPAMMY)) == COLD_START
    path.write_bytes(good)
    live.reload_if_changed()
    assert live.current().trained


def test_old_model_message_says_how_to_retrain(trained: SpamFilter, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["tokenizer_version"] = np.int64(1)
    np.savez(path, **arrays)
    with pytest.raises(SpamModelError, match=r"tokenizer v1.*spam train --reset"):
        SpamFilter.load(path, SpamThresholds())


def test_forgetting_a_corrected_verdict_restores_the_counts(trained: SpamFilter) -> None:
    """A verdict learned at once, then corrected by staff: forgotten, then the staff label."""
    before = trained.score(mail(HAMMY, subject="Re: status"))
    wrong = mail(HAMMY, subject="Re: status")
    trained.learn([wrong], [True], save=False)
    assert trained.class_counts() == (20, 21)
    trained.forget([wrong], [True], save=False)
    assert trained.class_counts() == (20, 20)
    assert trained.score(mail(HAMMY, subject="Re: status")).probability == before.probability


def test_forgetting_never_goes_below_zero(tmp_path: Path) -> None:
    spam_filter = SpamFilter(path=tmp_path / "model.npz")
    spam_filter.learn([mail(HAMMY)], [False], save=False)
    spam_filter.forget([mail(SPAMMY)], [True], save=False)
    assert spam_filter.class_counts() == (1, 0)


def test_two_writers_of_one_model_file_lose_no_decision(trained: SpamFilter) -> None:
    """The daemon's filter and `spam mark` in another process both learn: the later save
    reads what the other one wrote first instead of replacing it."""
    path = trained.path
    daemon = LiveSpamFilter(path, SpamThresholds())
    cli = SpamFilter.load(path, SpamThresholds())
    cli.learn([mail(SPAMMY, subject="FREE!!!")], [True])  # `spam mark` replaces the file
    # the daemon's batch of sure verdicts
    daemon.learn_tokens([tokenize(mail(HAMMY, subject="Re: status"))], [False])
    assert SpamFilter.load(path, SpamThresholds()).class_counts() == (21, 21)
    assert daemon.current().class_counts() == (21, 21)
    daemon.reload_if_changed()  # its own save is no change to reload
    assert daemon.current().class_counts() == (21, 21)


def test_train_reset_still_replaces_the_file(trained: SpamFilter) -> None:
    fresh = SpamFilter(path=trained.path)
    fresh.learn([mail(HAMMY), mail(SPAMMY)], [False, True])
    assert SpamFilter.load(trained.path, SpamThresholds()).class_counts() == (1, 1)
