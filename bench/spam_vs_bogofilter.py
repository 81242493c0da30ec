"""maildesk's spam filter against Debian's bogofilter, on the very same splits, in one run.

    .venv/bin/python bench/spam_vs_bogofilter.py [--corpus DIR] [--folds 5] [--time-split 0.7]

Splits: k-fold cross-validation (the easy check), a time split (train on the
oldest FRACTION of each class by Date, test on the newer: the honest check),
"mime": train on the whole corpus, test on the labelled spam/phishing and
legitimate mails of corpora/mime (labels below, by reading them), and "unseen
ham": train on the whole corpus, test on ham from another source and decade
(corpora/threads, blinux-list 2019-2026) and on Russian customer mail
(tests/russian_mail.py: written requests and real Russian prose from
corpora/mime), a language absent from the training mail.

Both filters see identical training and test mails. bogofilter keeps its
defaults (ham_cutoff 0.45, spam_cutoff 0.99); maildesk uses SpamThresholds().
Latency per mail: maildesk is ``SpamFilter.score(InboundMail)`` (parsing not
included; it is shared with the whole pipeline), and, on its own row, parsing
the raw bytes (mail-parser, as the daemon does) plus scoring; bogofilter is one persistent
``bogofilter -b`` process fed one file name at a time through a pipe, so it
includes its own MIME parsing and the pipe round trip. Training time: maildesk
``learn()`` on parsed mails (tokenizing included); bogofilter ``-s``/``-n``
in bulk mode on the raw files.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages
from maildesk.spam.evaluate import (
    EvalReport,
    Sample,
    Scored,
    kfold,
    report,
    score_all,
    time_split,
)
from maildesk.spam.model import SpamFilter, SpamThresholds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.russian_mail import constructed, quoting_customers

BOGOFILTER = "/usr/bin/bogofilter"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
MIME_SPAM = frozenset(
    {
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
    }
)  # malware, phishing, advance-fee, Chinese invoice spam, GTUBE
MIME_HAM = frozenset(
    {
        "mail_test_2",
        "mail_test_7",
        "mail_test_10",
        "mail_test_13",
        "mail_test_14",
        "mail_test_18",
        "mail_test_19",
        "mail_malformed_2",
    }
)  # weather bulletin, business mail, vendor newsletters, tests, a bounce


def load(paths: Sequence[Path], is_spam: bool, raw_dir: Path) -> list[tuple[Sample, Path]]:
    """Parse every mail and keep a raw copy (envelope stripped) for bogofilter."""
    return load_raw(iter_messages(list(paths)), is_spam, raw_dir)


def load_raw(
    mails: Iterable[tuple[str, bytes]], is_spam: bool, raw_dir: Path
) -> list[tuple[Sample, Path]]:
    loaded: list[tuple[Sample, Path]] = []
    for name, raw in mails:
        raw_path = raw_dir / f"{is_spam:d}-{len(loaded):05d}-{abs(hash(name)):x}.eml"
        raw_path.write_bytes(raw)
        loaded.append((Sample.of(name, parse_mail(raw), is_spam), raw_path))
    return loaded


Run = tuple[list[Scored], list[float], float, int]  # scored, latencies, train seconds, mails


def pooled(runs: Sequence[Run]) -> EvalReport:
    """One report over several runs (k folds): scores pooled, training time averaged."""
    scored = [item for run in runs for item in run[0]]
    latencies = [value for run in runs for value in run[1]]
    seconds = sum(run[2] for run in runs) / len(runs)
    return report(scored, latencies, seconds, max(run[3] for run in runs))


def run_maildesk(
    train: Sequence[Sample], test: Sequence[Sample], thresholds: SpamThresholds
) -> Run:
    spam_filter = SpamFilter(path=Path("unsaved.npz"), thresholds=thresholds)
    start = time.perf_counter()
    spam_filter.learn([s.mail for s in train], [s.is_spam for s in train], save=False)
    seconds = time.perf_counter() - start
    score_all(spam_filter, test)  # warm-up pass: the token index memo, as in a running daemon
    scored, latencies = score_all(spam_filter, test)
    return scored, latencies, seconds, len(train)


def parse_and_score_ms(spam_filter: SpamFilter, raws: Sequence[bytes]) -> tuple[float, float]:
    """p50 and p99 of parsing the raw bytes plus scoring, in ms (warm memo)."""
    for raw in raws:
        spam_filter.score(parse_mail(raw))
    timings = []
    for raw in raws:
        start = time.perf_counter()
        spam_filter.score(parse_mail(raw))
        timings.append(time.perf_counter() - start)
    p50, p99 = statistics.quantiles(timings, n=100)[49], statistics.quantiles(timings, n=100)[98]
    return p50 * 1000, p99 * 1000


def start_bogofilter(db: str) -> subprocess.Popen[str]:
    """One persistent ``bogofilter -t -b``: a file name in, one line ("S 0.999000") out."""
    return subprocess.Popen(
        ["stdbuf", "-oL", BOGOFILTER, "-d", db, "-t", "-b"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def run_bogofilter(
    train: Sequence[tuple[Sample, Path]], test: Sequence[tuple[Sample, Path]]
) -> Run:
    with tempfile.TemporaryDirectory(prefix="bogo-") as db:
        start = time.perf_counter()
        for flag, is_spam in (("-s", True), ("-n", False)):
            names = "\n".join(str(p) for s, p in train if s.is_spam == is_spam) + "\n"
            subprocess.run([BOGOFILTER, "-d", db, flag, "-b"], input=names.encode(), check=True)
        seconds = time.perf_counter() - start
        process = start_bogofilter(db)
        assert process.stdin is not None and process.stdout is not None
        scored: list[Scored] = []
        latencies: list[float] = []
        for sample, path in test:
            begin = time.perf_counter()
            process.stdin.write(f"{path}\n")
            process.stdin.flush()
            line = process.stdout.readline()
            latencies.append(time.perf_counter() - begin)
            letter, value = line.split()[-2:]  # "-t -b" prints "S 0.999000" per file
            band = {"S": "spam", "H": "ham", "U": "unsure"}[letter]
            scored.append(Scored(sample.name, sample.is_spam, float(value), band))
        process.stdin.close()
        process.wait()
    return scored, latencies, seconds, len(train)


ROWS = (
    ("ham quarantined (spam band)", "fp_rate", "{:.3%}"),
    ("ham held (unsure band)", "ham_held", "{:.2%}"),
    ("spam let through (ham band)", "fn_rate", "{:.2%}"),
    ("spam unsure", "spam_unsure", "{:.2%}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("accuracy at 0.5", "accuracy_at_half", "{:.4f}"),
    ("spam caught (spam band)", "recall", "{:.2%}"),
    ("unsure ham", "unsure_ham", "{}"),
    ("unsure spam", "unsure_spam", "{}"),
    ("ROC AUC", "auc", "{:.4f}"),
    ("latency p50 ms/mail", "latency_ms_p50", "{:.3f}"),
    ("latency p99 ms/mail", "latency_ms_p99", "{:.3f}"),
    ("training s", "train_seconds", "{:.2f}"),
    ("training mails", "train_mails", "{}"),
)


def show(title: str, ours: EvalReport, theirs: EvalReport) -> None:
    print(f"\n== {title}: test {ours.ham} ham + {ours.spam} spam")
    print(f"{'':32} {'maildesk':>12} {'bogofilter':>12}")
    derived = {
        "ham_held": lambda r: r.unsure_ham / r.ham if r.ham else None,
        "spam_unsure": lambda r: r.unsure_spam / r.spam if r.spam else None,
    }
    for label, attribute, fmt in ROWS:
        values = [
            derived[attribute](r) if attribute in derived else getattr(r, attribute)
            for r in (ours, theirs)
        ]
        cells = ["n/a" if v is None else fmt.format(v) for v in values]
        print(f"{label:32} {cells[0]:>12} {cells[1]:>12}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "spamassassin")
    parser.add_argument("--mime", type=Path, default=SHARED / "mime" / "mail-parser")
    parser.add_argument(
        "--threads", type=Path, default=SHARED / "threads" / "blinux-list-threads.mbox"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--time-split", type=float, default=0.7)
    args = parser.parse_args(argv)
    if not shutil.which(BOGOFILTER) or not shutil.which("stdbuf"):
        print(f"needs {BOGOFILTER} and stdbuf", file=sys.stderr)
        return 1
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    thresholds = SpamThresholds()
    print(
        f"maildesk bands: ham < {thresholds.ham_below}, spam > {thresholds.spam_above}; "
        "bogofilter: ham_cutoff 0.45, spam_cutoff 0.99 (defaults)"
    )
    with tempfile.TemporaryDirectory(prefix="spam-bench-") as tmp:
        raw_dir = Path(tmp)
        start = time.perf_counter()
        corpus = load([args.corpus / "ham"], False, raw_dir)
        corpus += load([args.corpus / "spam"], True, raw_dir)
        print(f"parsed {len(corpus)} mails in {time.perf_counter() - start:.1f} s")
        raw_of = {id(sample): path for sample, path in corpus}
        samples = [sample for sample, _ in corpus]

        def both(
            splits: Sequence[tuple[list[Sample], list[Sample]]],
        ) -> tuple[EvalReport, EvalReport]:
            ours = [run_maildesk(train, test, thresholds) for train, test in splits]
            theirs = [
                run_bogofilter(
                    [(s, raw_of[id(s)]) for s in train], [(s, raw_of[id(s)]) for s in test]
                )
                for train, test in splits
            ]
            return pooled(ours), pooled(theirs)

        split = time_split(samples, args.time_split)
        show(f"time split: oldest {args.time_split:.0%} of each class -> newest", *both([split]))
        folds = list(kfold(samples, args.folds))
        show(f"{args.folds}-fold cross-validation (pooled)", *both(folds))
        if args.mime.is_dir():
            mime = [
                (sample, path)
                for is_spam, names in ((True, MIME_SPAM), (False, MIME_HAM))
                for sample, path in load(
                    [args.mime / n for n in sorted(names) if (args.mime / n).exists()],
                    is_spam,
                    raw_dir,
                )
            ]
            for sample, path in mime:
                raw_of[id(sample)] = path
            show(
                "mime spam/phishing + legitimate (trained on the whole corpus)",
                *both([(samples, [s for s, _ in mime])]),
            )
        unseen = load([args.threads], False, raw_dir)
        russian = load_raw(
            (
                (f"ru-{i}", raw)
                for i, raw in enumerate(constructed() + list(quoting_customers(args.mime)))
            ),
            False,
            raw_dir,
        )
        for sample, path in unseen + russian:
            raw_of[id(sample)] = path
        show(
            "unseen ham: blinux-list 2019-2026 (trained on the whole corpus)",
            *both([(samples, [s for s, _ in unseen])]),
        )
        show(
            "unseen ham: Russian customer mail (trained on the whole corpus)",
            *both([(samples, [s for s, _ in russian])]),
        )
        spam_filter = SpamFilter(path=Path("unsaved.npz"), thresholds=thresholds)
        spam_filter.learn([s.mail for s in samples], [s.is_spam for s in samples], save=False)
        _, test = split
        p50, p99 = parse_and_score_ms(spam_filter, [raw_of[id(s)].read_bytes() for s in test])
        print(
            f"\nmaildesk parse + score, time-split test mails: p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
