"""Parse + spam score latency per mail, against bogofilter scoring the same mails in the same run.

    .venv/bin/python bench/spam_latency.py [--corpus DIR] [--rounds 2]

maildesk: ``parse_mail(raw)`` then ``SpamFilter.score(mail)`` (tokenizing
included) on a model trained on the whole corpus, over every corpus mail,
after one warm-up pass. Two clocks: wall time (what a mail waits, including
time the machine's other processes took the core) and this thread's CPU time
(the work itself). bogofilter: one persistent ``bogofilter -b`` process fed
one file name at a time through a pipe (its own MIME parse, its database
lookups and the pipe round trip), trained on the same mails: it is the peer
measured under the same load in the same run.
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
from collections.abc import Sequence
from pathlib import Path

from maildesk.core.parse import parse_mail
from maildesk.intake.sources import iter_messages
from maildesk.spam.model import SpamFilter, SpamThresholds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spam_vs_bogofilter import BOGOFILTER, SHARED, start_bogofilter


def quantiles_ms(values: Sequence[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def maildesk_timings(
    raws: Sequence[bytes], labels: Sequence[bool], rounds: int
) -> tuple[list[float], list[float]]:
    spam_filter = SpamFilter(path=Path("unsaved.npz"), thresholds=SpamThresholds())
    spam_filter.learn([parse_mail(raw) for raw in raws], list(labels), save=False)
    for raw in raws:  # warm-up: the token memo, as in a running daemon
        spam_filter.score(parse_mail(raw))
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for raw in raws:
            start, start_cpu = time.perf_counter(), time.thread_time()
            spam_filter.score(parse_mail(raw))
            cpu.append(time.thread_time() - start_cpu)
            wall.append(time.perf_counter() - start)
    return wall, cpu


def bogofilter_timings(files: Sequence[Path], labels: Sequence[bool], rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bogo-") as db:
        for flag, is_spam in (("-s", True), ("-n", False)):
            names = "".join(f"{f}\n" for f, s in zip(files, labels, strict=True) if s == is_spam)
            subprocess.run([BOGOFILTER, "-d", db, flag, "-b"], input=names.encode(), check=True)
        process = start_bogofilter(db)
        assert process.stdin is not None and process.stdout is not None
        wall: list[float] = []
        for round_ in range(rounds + 1):  # the first round warms the page cache
            for path in files:
                start = time.perf_counter()
                process.stdin.write(f"{path}\n")
                process.stdin.flush()
                process.stdout.readline()
                if round_:
                    wall.append(time.perf_counter() - start)
        process.stdin.close()
        process.wait()
    return wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "spamassassin")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if not shutil.which(BOGOFILTER) or not shutil.which("stdbuf"):
        print(f"needs {BOGOFILTER} and stdbuf", file=sys.stderr)
        return 1
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    mails = [
        (raw, is_spam)
        for is_spam in (False, True)
        for _, raw in iter_messages([args.corpus / ("spam" if is_spam else "ham")])
    ]
    raws, labels = [raw for raw, _ in mails], [is_spam for _, is_spam in mails]
    with tempfile.TemporaryDirectory(prefix="spam-latency-") as tmp:
        files = []
        for i, raw in enumerate(raws):  # envelope lines stripped, as maildesk reads them
            files.append(Path(tmp) / f"{i:05d}.eml")
            files[-1].write_bytes(raw)
        bogo = bogofilter_timings(files, labels, args.rounds)
    wall, cpu = maildesk_timings(raws, labels, args.rounds)
    print(f"{len(raws)} mails x {args.rounds} rounds; ms per mail")
    print(f"{'':36} {'p50':>8} {'p99':>8}")
    for label, values in (
        ("maildesk parse + score, wall", wall),
        ("maildesk parse + score, CPU", cpu),
        ("bogofilter -b (pipe), wall", bogo),
    ):
        p50, p99 = quantiles_ms(values)
        print(f"{label:36} {p50:8.3f} {p99:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
