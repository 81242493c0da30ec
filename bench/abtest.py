"""A/B runs of a bench script against a git worktree of an earlier revision: the same
script, alternating (A B A B ...), each run in its own process with the tree under test
first on sys.path (MAILDESK_BENCH_TREE); each run prints its figures as one JSON line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from bench.ingest import baseline_tree, remove_tree

REPO = Path(__file__).resolve().parents[1]

Figures = dict[str, float]


@contextlib.contextmanager
def _nothing() -> Iterator[list[str]]:
    yield []


def alternate(
    script: str,
    rev: str,
    rounds: int,
    args: list[str],
    per_run: Callable[[], AbstractContextManager[list[str]]] = _nothing,
) -> dict[str, list[Figures]]:
    """`script args` for the baseline and for this tree, `rounds` times each; `per_run`
    gives each run its own extra arguments (a fresh database) and cleans up after it."""
    where = Path(tempfile.mkdtemp(prefix="maildesk-ab-"))
    tree = baseline_tree(rev, where)
    results: dict[str, list[Figures]] = {f"baseline {rev}": [], "this": []}
    try:
        for _ in range(rounds):
            for label, root in ((f"baseline {rev}", tree), ("this", REPO)):
                with per_run() as extra:
                    env = dict(os.environ, MAILDESK_BENCH_TREE=str(root))
                    out = subprocess.run([sys.executable, script, *args, *extra], env=env,
                                         capture_output=True, text=True, check=False)
                if out.returncode:
                    sys.exit(f"{label}: {out.stdout[-1000:]}{out.stderr[-3000:]}")
                figures: Figures = json.loads(out.stdout.strip().splitlines()[-1])
                results[label].append(figures)
                print(f"{label:<22} " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()),
                      flush=True)
    finally:
        remove_tree(tree)
        shutil.rmtree(where, ignore_errors=True)
    return results


def print_medians(title: str, results: dict[str, list[Figures]]) -> None:
    print(f"\n{title}, median of each side's runs:")
    base, this = results.values()
    for name in base[0]:
        b = statistics.median(r[name] for r in base)
        t = statistics.median(r[name] for r in this)
        print(f"  {name:<36} baseline {b:8.1f}   this {t:8.1f}   this/baseline {t / b:5.2f}x")
