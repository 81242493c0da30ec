"""`maildesk spam train|score|eval` through typer's CliRunner, on real files."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from maildesk.cli.spam import spam_app
from maildesk.spam import SpamFilter, SpamThresholds
from tests.spam.test_spam_model import HAM_TEXTS, SPAM_TEXTS, build

runner = CliRunner()


@pytest.fixture
def mail_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A directory of ham .eml files and an mbox of spam (with "From " envelopes)."""
    monkeypatch.setenv("MAILDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    ham_dir = tmp_path / "ham" / "nested"
    ham_dir.mkdir(parents=True)
    spam_box = tmp_path / "spam.mbox"
    box = mailbox.mbox(str(spam_box))
    for round_ in range(4):
        for i, text in enumerate(HAM_TEXTS):
            raw = build(f"{text} ({round_})", subject=f"Re: status {round_}")
            (ham_dir / f"{round_}-{i}.eml").write_bytes(raw)
        for text in SPAM_TEXTS:
            box.add(build(f"{text} {round_}", subject="FREE!!!", sender="d@promo-mail.biz"))
    box.flush()
    box.close()
    return tmp_path / "ham", spam_box


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(spam_app, list(args))
    return result.exit_code, result.output


def test_train_then_score_then_eval(mail_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    ham, spam = mail_dirs
    code, output = invoke("train", "--ham", str(ham), "--spam", str(spam))
    assert code == 0, output
    assert "learned 16 ham and 16 spam" in output
    model = tmp_path / "data" / "spam-model.npz"
    assert SpamFilter.load(model, SpamThresholds()).class_counts() == (16, 16)

    probe = tmp_path / "probe.eml"
    probe.write_bytes(
        b"From d@promo-mail.biz  Mon Sep  2 10:00:00 2024\n"  # an envelope line is fine
        + build(
            "Click here now for your FREE cash prize, order now!",
            subject="FREE!!!",
            sender="d@promo-mail.biz",
        )
    )
    code, output = invoke("score", str(probe), "--json")
    assert code == 0, output
    verdict = json.loads(output)
    assert verdict["band"] == "spam" and verdict["probability"] > 0.9
    assert verdict["model_version"].startswith("chi2-")
    assert any(t["token"] == "free" and t["log_odds"] > 0 for t in verdict["top_tokens"])

    code, output = invoke("score", str(probe))
    assert code == 0 and "band spam" in output and "free" in output

    before = model.read_bytes()
    code, output = invoke("eval", "--ham", str(ham), "--spam", str(spam), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["mails"] == 32 and report["fp_rate"] == 0.0 and report["fn_rate"] == 0.0
    assert report["confusion"]["spam"]["spam"] == 16 and report["auc"] == 1.0
    expected = {
        "accuracy",
        "precision",
        "recall",
        "fp_rate",
        "fn_rate",
        "unsure",
        "unsure_ham",
        "unsure_spam",
        "auc",
        "confusion",
    }
    assert expected <= set(report)
    assert model.read_bytes() == before  # evaluating the live model learns nothing


@pytest.mark.parametrize(
    "mode", [["--folds", "2"], ["--time-split", "0.5"]], ids=["folds", "time-split"]
)
def test_eval_fresh_models_leave_the_live_model_alone(
    mail_dirs: tuple[Path, Path], tmp_path: Path, mode: list[str]
) -> None:
    ham, spam = mail_dirs
    code, output = invoke("eval", "--ham", str(ham), "--spam", str(spam), *mode, "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["ham"] + report["spam"] == (32 if mode[0] == "--folds" else 16)
    assert report["fp_rate"] == 0.0 and report["auc"] > 0.9
    assert not (tmp_path / "data" / "spam-model.npz").exists()
    code, output = invoke("eval", "--ham", str(ham), "--spam", str(spam), *mode)
    assert code == 0 and "fp_rate" in output and "confusion" in output


def test_score_before_training_is_unscored(mail_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    probe = next(mail_dirs[0].rglob("*.eml"))
    code, output = invoke("score", str(probe), "--json")
    assert code == 0
    assert json.loads(output)["probability"] is None and json.loads(output)["band"] == "ham"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--ham", "nowhere/at/all"], "nowhere/at/all"),
        (["train"], "nothing to learn"),
        (["score", "missing.eml"], "missing.eml"),
        (["eval", "--ham", "ham"], "both --ham"),
        (["eval", "--ham", "ham", "--spam", "spam.mbox"], "no trained model"),
        (["eval", "--ham", "ham", "--spam", "spam.mbox", "--folds", "1"], "at least 2"),
        (["eval", "--ham", "ham", "--spam", "spam.mbox", "--time-split", "1.5"], "between 0"),
        (
            ["eval", "--ham", "ham", "--spam", "spam.mbox", "--folds", "3", "--time-split", "0.5"],
            "pick one",
        ),
        (["eval", "--ham", "ham", "--spam", "spam.mbox", "--folds", "3", "--online"], "pick one"),
    ],
    ids=[
        "missing-path",
        "no-input",
        "missing-mail",
        "one-class",
        "no-model",
        "folds",
        "fraction",
        "both-modes",
        "online-and-folds",
    ],
)
def test_user_mistakes_are_one_line(
    mail_dirs: tuple[Path, Path], args: list[str], message: str
) -> None:
    code, output = invoke(*args)
    assert code == 1
    assert message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_damaged_model_is_one_line(mail_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spam-model.npz").write_bytes(b"garbage")
    code, output = invoke("score", str(next(mail_dirs[0].rglob("*.eml"))))
    assert code == 1 and "not a maildesk spam model" in output
    assert len(output.strip().splitlines()) == 1


def test_directory_given_to_score_is_one_line(mail_dirs: tuple[Path, Path]) -> None:
    code, output = invoke("score", str(mail_dirs[0]))
    assert code == 1 and "is a directory" in output
    assert len(output.strip().splitlines()) == 1


def test_eval_online_reports_cumulative_rates(mail_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    ham, spam = mail_dirs
    code, output = invoke("eval", "--ham", str(ham), "--spam", str(spam), "--online", "--json")
    assert code == 0, output
    report = json.loads(output)
    (final,) = report["checkpoints"]  # 32 mails: fewer than 500, one row at the end
    assert (final["mails"], final["ham"], final["spam"]) == (32, 16, 16)
    assert 2 <= final["learned"] <= 32  # cold: learns until it has seen both classes
    assert report["after_warmup"] is None and report["warmup"] == 1000
    assert not (tmp_path / "data" / "spam-model.npz").exists()
    code, output = invoke("eval", "--ham", str(ham), "--spam", str(spam), "--online")
    assert code == 0 and "cumulative" in output and "learning only staff corrections" in output
    code, output = invoke(
        "eval", "--ham", str(ham), "--spam", str(spam), "--online", "--learn", "sure", "--json"
    )
    assert code == 0, output
    assert json.loads(output)["learning"] == "sure"
    code, output = invoke(
        "eval", "--ham", str(ham), "--spam", str(spam), "--online", "--learn", "x"
    )
    assert code == 1 and "--learn must be" in output and "Traceback" not in output


def test_model_from_an_older_maildesk_asks_for_a_retrain(
    mail_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    ham, spam = mail_dirs
    assert invoke("train", "--ham", str(ham), "--spam", str(spam))[0] == 0
    model = tmp_path / "data" / "spam-model.npz"
    with np.load(model, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["tokenizer_version"] = np.int64(1)
    with model.open("wb") as handle:
        np.savez(handle, **arrays)
    for args in (["score", str(next(ham.rglob("*.eml")))], ["train", "--ham", str(ham)]):
        code, output = invoke(*args)
        assert code == 1 and "Traceback" not in output
        assert "retrain: `maildesk spam train --reset" in output
        assert len(output.strip().splitlines()) == 1
    code, output = invoke("train", "--reset", "--ham", str(ham), "--spam", str(spam))
    assert code == 0, output
    assert SpamFilter.load(model, SpamThresholds()).class_counts() == (16, 16)
