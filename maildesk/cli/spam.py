"""`maildesk spam train|score|eval`: the spam filter from the command line.

User mistakes (a missing path, an unreadable file, a damaged model, a bad
option value) are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from maildesk.cli.spam_report import print_online, print_report, thresholds_json
from maildesk.config.settings import load_settings
from maildesk.core.parse import InboundMail, parse_mail
from maildesk.errors import MaildeskError
from maildesk.intake.sources import iter_messages

if TYPE_CHECKING:  # scikit-learn loads only when a spam command runs, not for every CLI call
    from maildesk.spam.evaluate import EvalReport, Learning, OnlineReport, Sample
    from maildesk.spam.model import SpamFilter, SpamThresholds

spam_app = typer.Typer(
    help="Spam filter: train, score, evaluate.", no_args_is_help=True, add_completion=False
)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

HamOption = Annotated[
    list[Path], typer.Option("--ham", help="Ham: file, directory, Maildir or mbox (repeatable).")
]
SpamOption = Annotated[
    list[Path], typer.Option("--spam", help="Spam: file, directory, Maildir or mbox (repeatable).")
]
ModelOption = Annotated[
    Path | None, typer.Option("--model", help="Model file [default: DATA_DIR/spam-model.npz]")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(message: str) -> NoReturn:
    err.print(f"maildesk spam: {' '.join(message.split())}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line and exit status 1."""
    try:
        yield
    except (MaildeskError, OSError, ValueError) as exc:
        _fail(str(exc) or type(exc).__name__)


def _settings_paths(model: Path | None) -> tuple[Path, SpamThresholds]:
    from maildesk.spam.model import SpamThresholds

    settings = load_settings()
    thresholds = SpamThresholds(settings.spam_ham_below, settings.spam_spam_above)
    return (model or settings.spam_model_path), thresholds


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )


def _sample(job: tuple[str, bytes, bool]) -> Sample | None:
    from maildesk.spam.evaluate import Sample

    name, raw, is_spam = job
    try:
        return Sample.of(name, parse_mail(raw), is_spam)
    except MaildeskError:
        return None


def load_samples(ham: Sequence[Path], spam: Sequence[Path]) -> list[Sample]:
    """Read and parse every mail under the paths, with a progress bar; unparseable ones skipped."""

    logging.getLogger("mailparser").setLevel(logging.CRITICAL)  # per-part chatter, not errors
    samples: list[Sample] = []
    skipped = 0
    jobs = [
        (name, raw, is_spam)
        for paths, is_spam in ((ham, False), (spam, True))
        for name, raw in iter_messages(list(paths))
    ]
    # Parsing and tokenizing are most of the cost: spread them over the cores.
    context = multiprocessing.get_context("forkserver")
    with (
        _progress() as progress,
        ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool,
    ):
        task = progress.add_task("reading mail", total=len(jobs))
        for sample in pool.map(_sample, jobs, chunksize=64):
            progress.advance(task)
            if sample is None:
                skipped += 1
            else:
                samples.append(sample)
    if skipped:
        err.print(f"skipped {skipped} mail(s) that could not be parsed")
    return samples


@spam_app.command()
def train(
    ham: HamOption = [],  # noqa: B006  # typer reads the default, never mutates it
    spam: SpamOption = [],  # noqa: B006
    model: ModelOption = None,
    reset: Annotated[bool, typer.Option("--reset", help="Start from an empty model.")] = False,
) -> None:
    """Learn ham and spam into the model (added to what it knows, unless --reset)."""
    from maildesk.spam.model import SpamFilter

    with _user_errors():
        if not ham and not spam:
            raise ValueError("nothing to learn: give --ham PATH and/or --spam PATH")
        path, thresholds = _settings_paths(model)
        samples = load_samples(ham, spam)
        if not samples:
            raise ValueError("no mail found under the given paths")
        spam_filter = SpamFilter(path, thresholds) if reset else SpamFilter.load(path, thresholds)
        start = time.perf_counter()
        spam_filter.learn_tokens([s.tokens for s in samples], [s.is_spam for s in samples])
        took = time.perf_counter() - start
        ham_total, spam_total = spam_filter.class_counts()
        learned_spam = sum(s.is_spam for s in samples)
        out.print(
            f"learned {len(samples) - learned_spam} ham and {learned_spam} spam in {took:.2f} s; "
            f"the model now knows {ham_total} ham and {spam_total} spam"
        )
        out.print(
            f"model {spam_filter.model_version or '(cold start: needs both classes)'} "
            f"saved to {path}"
        )


@spam_app.command()
def score(
    mail_file: Annotated[Path, typer.Argument(metavar="MAIL", help="A mail file (.eml, raw).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score one mail and show the tokens that pushed it most."""
    from maildesk.spam.model import SpamFilter

    with _user_errors():
        path, thresholds = _settings_paths(model)
        spam_filter = SpamFilter.load(path, thresholds)
        mail = _read_one(mail_file)
        verdict = spam_filter.score(mail)
    if as_json:
        print(
            json.dumps(
                {
                    "file": str(mail_file),
                    "probability": verdict.probability,
                    "band": verdict.band,
                    "scored": verdict.scored,
                    "model_version": verdict.model_version,
                    "top_tokens": [{"token": t, "log_odds": w} for t, w in verdict.top_tokens],
                },
                ensure_ascii=False,
            )
        )
        return
    if verdict.probability is None:
        out.print(f"band ham (unscored: no model at {path} yet; run `maildesk spam train`)")
        return
    out.print(
        f"probability {verdict.probability:.4f}  band {verdict.band}  model {verdict.model_version}"
    )
    table = Table("token", "log-odds", "towards", title="tokens that pushed it most")
    for token, weight in verdict.top_tokens:
        table.add_row(token, f"{weight:+.2f}", "spam" if weight > 0 else "ham")
    out.print(table)


FoldsOption = Annotated[
    int | None, typer.Option("--folds", help="Cross-validate fresh models over N folds.")
]
TimeSplitOption = Annotated[
    float | None,
    typer.Option(
        "--time-split",
        metavar="FRACTION",
        help="Train a fresh model on the oldest FRACTION of each class (Date), test the rest.",
    ),
]
OnlineOption = Annotated[
    bool,
    typer.Option(
        "--online",
        help="A fresh model meets the mails in Date order; each is scored, then learned "
        "as --learn says; rates every 500 mails.",
    ),
]
LearnOption = Annotated[
    str,
    typer.Option(
        "--learn",
        metavar="POLICY",
        help="With --online: 'sure' also learns each verdict in a sure band at once "
        "(corrected verdicts are forgotten, then the staff decision learned); "
        "'corrections' learns staff decisions only. The daemon does as "
        "MAILDESK_SPAM_LEARN says (default: sure).",
    ),
]


@spam_app.command("eval")
def eval_command(
    ham: HamOption = [],  # noqa: B006
    spam: SpamOption = [],  # noqa: B006
    folds: FoldsOption = None,
    time_split: TimeSplitOption = None,
    online: OnlineOption = False,
    learn: LearnOption = "corrections",
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure the filter. Without --folds/--time-split/--online: the current model,
    learning nothing."""
    from maildesk.spam.model import SpamFilter

    with _user_errors():
        _check_eval_options(ham, spam, folds, time_split, online, learn)
        path, thresholds = _settings_paths(model)
        live: SpamFilter | None = None
        if folds is None and time_split is None and not online:
            live = SpamFilter.load(path, thresholds)
            if not live.trained:
                raise ValueError(f"no trained model at {path}: run `maildesk spam train` first")
        samples = load_samples(ham, spam)
        if not any(s.is_spam for s in samples) or all(s.is_spam for s in samples):
            raise ValueError("need both ham and spam mail to evaluate")
        if online:
            print_online(_online(samples, thresholds, learn), thresholds, as_json)
            return
        result, mode = _evaluate(samples, thresholds, live, folds, time_split)
    if as_json:
        print(
            json.dumps(
                {"mode": mode, "thresholds": thresholds_json(thresholds), **result.to_json()}
            )
        )
    else:
        print_report(mode, result, thresholds)


def _check_eval_options(
    ham: Sequence[Path], spam: Sequence[Path], folds: int | None, time_split: float | None,
    online: bool, learn: str,
) -> None:
    if not ham or not spam:
        raise ValueError("give both --ham PATH and --spam PATH")
    if sum((folds is not None, time_split is not None, online)) > 1:
        raise ValueError("--folds, --time-split and --online are alternatives: pick one")
    if learn not in ("sure", "corrections"):
        raise ValueError(f"--learn must be 'sure' or 'corrections', not {learn!r}")
    if folds is not None and folds < 2:
        raise ValueError("--folds must be at least 2")
    if time_split is not None and not 0.0 < time_split < 1.0:
        raise ValueError("--time-split must be between 0 and 1 (exclusive)")


def _evaluate(
    samples: Sequence[Sample], thresholds: SpamThresholds, live: SpamFilter | None,
    folds: int | None, time_split: float | None,
) -> tuple[EvalReport, str]:
    """The current model (`live`), cross-validation, or a time split of fresh models."""
    from maildesk.spam.evaluate import cross_validate, evaluate_split, score_all
    from maildesk.spam.evaluate import report as make_report
    from maildesk.spam.evaluate import time_split as split_by_time

    if live is not None:
        scored, latencies = score_all(live, samples)
        return make_report(scored, latencies), f"current model {live.model_version}"
    if folds is not None:
        result = _with_bar(
            f"{folds}-fold cross-validation",
            folds,
            lambda tick: cross_validate(samples, thresholds, folds, tick),
        )
        return result, f"{folds}-fold cross-validation, fresh models"
    assert time_split is not None
    train_set, test_set = split_by_time(samples, time_split)
    result = evaluate_split(train_set, test_set, thresholds)
    return result, f"time split: trained on the oldest {time_split:.0%} of each class"


def _online(samples: Sequence[Sample], thresholds: SpamThresholds, learn: str) -> OnlineReport:
    from maildesk.spam.evaluate import evaluate_online

    learning: Learning = "sure" if learn == "sure" else "corrections"
    with _progress() as progress:
        task = progress.add_task(f"online: score, then learn ({learn})", total=len(samples))
        return evaluate_online(
            samples, thresholds, on_mail=lambda: progress.advance(task), learning=learning
        )


def _read_one(path: Path) -> InboundMail:
    if path.is_dir():
        raise ValueError(f"{path} is a directory: score takes one mail file")
    messages = list(iter_messages([path]))
    if not messages:
        raise ValueError(f"{path}: no mail in this file")
    return parse_mail(messages[0][1])


def _with_bar(
    label: str, total: int, work: Callable[[Callable[[], None]], EvalReport]
) -> EvalReport:
    with _progress() as progress:
        task = progress.add_task(label, total=total)
        return work(lambda: progress.advance(task))


def load_spam_filter(model: Path | None = None) -> SpamFilter | None:
    """The filter a staff decision teaches; None (and a line on stderr) when the model
    file is unusable: the decision still counts, only the learning waits."""
    from maildesk.spam import SpamFilter, SpamModelError

    path, thresholds = _settings_paths(model)
    try:
        return SpamFilter.load(path, thresholds)
    except SpamModelError as exc:
        err.print(f"maildesk spam: model not updated: {exc}")
        return None


@spam_app.command()
def mark(
    tid: Annotated[str, typer.Argument(help="The ticket: [MD-42], MD-42 or 42")],
    verdict: Annotated[str, typer.Argument(help="spam or ham")],
    model: ModelOption = None,
) -> None:
    """Staff decision: quarantine a ticket as spam, or release it as ham.

    Releasing a held or quarantined ticket sends the confirmation that was held
    back; either way the model learns the decision.
    """
    import getpass
    from datetime import UTC, datetime

    from sqlmodel import Session

    from maildesk.config.runtime import load_runtime
    from maildesk.core.tid import parse_tid
    from maildesk.storage.db import make_engine, require_current_schema
    from maildesk.work.quarantine import mark_ticket

    with _user_errors():
        if verdict not in ("spam", "ham"):
            raise ValueError(f"verdict must be 'spam' or 'ham', not {verdict!r}")
        number = parse_tid(tid)
        if number is None:
            raise ValueError(f"{tid!r} is not a ticket ID (expected [MD-42], MD-42 or 42)")
        settings = load_settings()
        runtime = load_runtime(settings)
        engine = make_engine(settings.effective_database_url)
        require_current_schema(engine)
        spam_filter = load_spam_filter(model)
        with Session(engine) as session:
            result = mark_ticket(
                session,
                number,
                verdict == "spam",
                runtime,
                spam_filter,
                actor=f"cli:{getpass.getuser()}",
                now=datetime.now(UTC),
            )
            session.commit()
        out.print(result)
