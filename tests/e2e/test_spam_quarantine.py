"""A trained filter in the running daemon: spam is quarantined without any mail going
out, unsure mail is held for staff (told how to release it), ham is confirmed, and so is a
Russian customer although the model learned English only; `spam mark` releases a held one
and the daemon scores with what it learned."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from maildesk.core.classify import classify
from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages
from maildesk.spam import SpamFilter, SpamThresholds
from maildesk.spam.tokenize import tokenize
from tests.conftest import base_env, maildesk_cli, wait_for
from tests.mailkit import mails_to, make_mail, send, sent_mails
from tests.russian_mail import customer_mail

HELD_OUT = 60


@pytest.fixture(scope="module")
def trained_model(corpora: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Train once through the CLI, as an operator would, on all but the newest 40 mails."""
    tmp = tmp_path_factory.mktemp("model")
    ham, spam = tmp / "ham", tmp / "spam"
    for label, target in (("ham", ham), ("spam", spam)):
        target.mkdir()
        files = sorted((corpora / "spamassassin" / label).iterdir())[:-HELD_OUT]
        for f in files:
            (target / f.name).symlink_to(f)
    env = base_env(tmp / "data", f"sqlite:///{tmp / 'x.db'}")
    maildesk_cli(env, "spam", "train", "--ham", str(ham), "--spam", str(spam))
    yield tmp / "data" / "spam-model.npz"


def pick(
    corpora: Path, label: str, band: str, model: Path, answerable: bool = True
) -> tuple[str, bytes]:
    """A held-out corpus mail the model puts in the given band, from a sender we may answer
    (most corpus ham is mailing-list mail, which never gets an automatic reply), or with
    ``answerable`` False one we may not."""
    spam_filter = SpamFilter.load(model, SpamThresholds())
    held_out = sorted((corpora / "spamassassin" / label).iterdir())[-HELD_OUT:]
    for _, raw in iter_messages(held_out):
        mail = parse_mail(raw)
        kind = classify(mail, mail.from_addr, frozenset({"support@localhost"}))
        if kind.may_auto_reply == answerable and spam_filter.score(mail).band == band:
            return mail.from_addr, raw
    pytest.skip(f"no held-out {label} mail lands in the {band} band")  # pragma: no cover


@pytest.mark.parametrize("backend", ["sqlite"])
def test_spam_quarantined_unsure_held_ham_confirmed(  # type: ignore[no-untyped-def]
    start_daemon, corpora: Path, trained_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(trained_model, data / "spam-model.npz")
    # The daemon's own learning of sure verdicts waits: this test follows the model
    # version of one staff decision (test_the_daemon_learns_its_sure_verdicts below).
    d = start_daemon(MAILDESK_SPAM_LEARN_SECONDS="3600")
    spam_from, spam_raw = pick(corpora, "spam", "spam", trained_model)
    ham_from, ham_raw = pick(corpora, "ham", "ham", trained_model)
    unsure_from, unsure_raw = pick(corpora, "spam", "unsure", trained_model)
    russian_from = "anna.petrova@yandex.ru"
    russian_raw = customer_mail(
        "Не приходит счёт за ноябрь",
        "Не приходит счёт за ноябрь, хотя в личном кабинете написано, что он выставлен.",
        0,
    )

    send(d.port, spam_raw, mail_from=spam_from)
    send(d.port, ham_raw, mail_from=ham_from)
    send(d.port, unsure_raw, mail_from=unsure_from)
    send(d.port, russian_raw, mail_from=russian_from)
    wait_for(lambda: d.scalar("select count(*) from ticket") == 4)
    wait_for(lambda: mails_to(data, ham_from) and mails_to(data, russian_from))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)

    statuses = dict(d.query("select requester, status from ticket"))
    assert statuses == {
        spam_from: "spam",
        ham_from: "new",
        unsure_from: "held",
        russian_from: "new",
    }
    assert mails_to(data, spam_from) == [] and mails_to(data, unsure_from) == []
    staff = [m for m in sent_mails(data) if "example.com" in str(m["To"])]
    assert len(staff) == 3  # ham, Russian: new ticket; unsure: possible spam; spam: nothing
    (held_notice,) = [m for m in staff if str(m["Subject"]).startswith("[possible spam]")]
    held_tid = d.scalar("select id from ticket where status = 'held'")
    body = held_notice.get_body(("plain",))
    assert body is not None and f"maildesk spam mark MD-{held_tid} ham" in body.get_content()
    band, model = d.query(
        "select spam_band, spam_model from message where from_addr = :a", a=spam_from
    )[0]
    assert band == "spam" and model.startswith("chi2-")

    listed = json.loads(maildesk_cli(d.env, "tickets", "--json").stdout)
    assert spam_from not in {t["requester"] for t in listed}
    quarantine = json.loads(maildesk_cli(d.env, "tickets", "--spam", "--json").stdout)
    assert [t["requester"] for t in quarantine] == [spam_from]

    held = d.scalar("select id from ticket where status = 'held'")
    result = maildesk_cli(d.env, "spam", "mark", f"MD-{held}", "ham")
    assert "released as ham: confirmation queued" in result.stdout
    wait_for(lambda: mails_to(data, unsure_from))
    assert d.scalar("select status from ticket where id = :i", i=held) == "new"
    # The decision was learned at once, and the running daemon scores with it.
    learned = SpamFilter.load(data / "spam-model.npz", SpamThresholds()).model_version
    assert learned is not None and learned != model
    wait_for(lambda: f"spam model {learned} loaded" in d.log())
    raw = customer_mail("Двойное списание", "С карты дважды списали оплату.", 1)
    send(d.port, raw, mail_from="i.smirnov@mail.ru")
    wait_for(lambda: d.scalar("select count(*) from ticket") == 5)
    wait_for(lambda: d.scalar("select count(*) from message where spam_model = :m", m=learned))

    bad = maildesk_cli(d.env, "spam", "mark", "MD-999", "ham", check=False)
    assert bad.returncode == 1 and "no ticket MD-999" in bad.stderr
    bad = maildesk_cli(d.env, "spam", "mark", f"MD-{held}", "maybe", check=False)
    assert bad.returncode == 1 and "'spam' or 'ham'" in bad.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_release_a_held_russian_customer_with_ham_by_mail(  # type: ignore[no-untyped-def]
    start_daemon, trained_model: Path, tmp_path: Path
) -> None:
    """A strict ham threshold holds even a plain Russian request; the staff member replies
    #ham to the [possible spam] notice: the customer gets the confirmation at once, and
    the filter learned it. #spam on another ticket quarantines it, nothing to its sender."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(trained_model, data / "spam-model.npz")
    d = start_daemon(MAILDESK_SPAM_HAM_BELOW="0.000001")
    customer = "anna.petrova@yandex.ru"
    send(d.port, customer_mail("Не приходит счёт за ноябрь",
                               "Не приходит счёт за ноябрь, хотя он выставлен.", 0),
         mail_from=customer)
    wait_for(lambda: d.scalar("select status from ticket where id = 1") == "held")
    notice = wait_for(lambda: [m for m in sent_mails(data)
                               if str(m["Subject"]).startswith("[possible spam]")])[0]
    staff = notice["To"].addresses[0].addr_spec
    token = notice["Reply-To"].addresses[0].addr_spec
    assert "#ham" in notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mails_to(data, customer) == []
    model_before = d.scalar("select spam_model from message where id = 1")

    reply = make_mail(sender=staff, to=token, subject=f"Re: {notice['Subject']}",
                      body="#ham\n", headers={"In-Reply-To": str(notice["Message-ID"])})
    send(d.port, reply, rcpts=[token], mail_from=staff)
    wait_for(lambda: mails_to(data, customer))
    assert d.scalar("select status from ticket where id = 1") == "new"
    confirmation = mails_to(data, customer)[0]
    assert "MD-1" in str(confirmation["Subject"])
    events = [r[0] for r in d.query("select detail from event where ticket_id = 1")]
    assert "held -> new (released as ham)" in events
    learned = SpamFilter.load(data / "spam-model.npz", SpamThresholds()).model_version
    assert learned != model_before

    # #spam on a held ticket: quarantined, the sender still hears nothing
    send(d.port, customer_mail("Скидки", "Купите скидки со скидкой.", 2),
         mail_from="s.popov@bk.ru")
    wait_for(lambda: d.scalar("select status from ticket where id = 2") == "held")
    notice2 = wait_for(lambda: [m for m in sent_mails(data)
                                if str(m["Subject"]).startswith("[possible spam] [MD-2]")])[0]
    token2 = notice2["Reply-To"].addresses[0].addr_spec
    staff2 = notice2["To"].addresses[0].addr_spec
    send(d.port, make_mail(sender=staff2, to=token2, subject="Re: spam", body="#spam\n",
                           headers={"In-Reply-To": str(notice2["Message-ID"])}),
         rcpts=[token2], mail_from=staff2)
    wait_for(lambda: d.scalar("select status from ticket where id = 2") == "spam")
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'queued'") == 0)
    assert mails_to(data, "s.popov@bk.ru") == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_daemon_learns_its_sure_verdicts_and_staff_correct_them(  # type: ignore[no-untyped-def]
    start_daemon, corpora: Path, trained_model: Path, tmp_path: Path
) -> None:
    """MAILDESK_SPAM_LEARN=sure (the default): sure ham and spam arriving live are learned
    without anyone acting; an import and a reply are not; `spam mark ... ham` on the
    quarantined one takes its spam verdict back before learning ham."""
    data = tmp_path / "data"
    data.mkdir()
    model = data / "spam-model.npz"
    shutil.copy(trained_model, model)
    before = SpamFilter.load(model, SpamThresholds())
    d = start_daemon(MAILDESK_SPAM_LEARN_SECONDS="1")
    spam_from, spam_raw = pick(corpora, "spam", "spam", trained_model)
    ham_from, ham_raw = pick(corpora, "ham", "ham", trained_model)
    _, imported_raw = pick(corpora, "ham", "ham", trained_model, answerable=False)
    spam_tokens = tokenize(parse_mail(spam_raw))

    (tmp_path / "import.eml").write_bytes(imported_raw)
    maildesk_cli(d.env, "ingest", "--no-notify", str(tmp_path / "import.eml"))
    send(d.port, spam_raw, mail_from=spam_from)
    send(d.port, ham_raw, mail_from=ham_from)
    wait_for(lambda: d.scalar("select count(*) from ticket") == 3)

    def learned() -> dict[str, str]:
        rows = d.query("select m.from_addr, kv.value from kv join message m "
                       "on kv.key = 'spam-learned:' || m.id")
        return dict(rows)

    wait_for(lambda: learned() == {spam_from: "spam", ham_from: "ham"})  # the import: none
    after = SpamFilter.load(model, SpamThresholds())
    assert after.model_version != before.model_version  # nobody marked anything
    (ham0, spam0), (ham1, spam1) = before.class_counts(), after.class_counts()
    assert (ham1, spam1) == (ham0 + 1, spam0 + 1)
    wait_for(lambda: "spam learning: learned 2 sure verdicts (1 ham, 1 spam)" in d.log())
    assert d.scalar("select status from ticket where requester = :a", a=spam_from) == "spam"

    # A reply on a ticket is never scored for learning.
    ham_tid = d.scalar("select id from ticket where requester = :a", a=ham_from)
    send(d.port, make_mail(sender=ham_from, subject=f"Re: [MD-{ham_tid}] thanks",
                           body="One more detail about my question.\n"), mail_from=ham_from)
    wait_for(lambda: d.scalar("select count(*) from message where from_addr = :a "
                              "and direction = 'in'", a=ham_from) == 2)

    # Staff release the quarantined one: its spam verdict is forgotten, then ham learned.
    spam_tid = d.scalar("select id from ticket where requester = :a", a=spam_from)
    _, base_spam = before.token_counts(spam_tokens)
    mid_ham, _ = after.token_counts(spam_tokens)
    result = maildesk_cli(d.env, "spam", "mark", f"MD-{spam_tid}", "ham")
    assert "model forgot its spam verdict and learned ham" in result.stdout
    marked = SpamFilter.load(model, SpamThresholds())
    ham2, spam2 = marked.token_counts(spam_tokens)
    assert spam2 == base_spam  # token counts back where the trained model had them
    assert ham2 == [h + 1 for h in mid_ham]
    assert marked.class_counts() == (ham0 + 2, spam0)
    assert learned() == {spam_from: "ham", ham_from: "ham"}
    again = maildesk_cli(d.env, "spam", "mark", f"MD-{spam_tid}", "ham")
    assert "model already had it" in again.stdout
    assert SpamFilter.load(model, SpamThresholds()).class_counts() == (ham0 + 2, spam0)
