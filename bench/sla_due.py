"""Due-date computations in business time: how long one takes.

    .venv/bin/python bench/sla_due.py [--n 100000] [--baseline 1000] [--seed 13]

Starts are random minutes over two years (2026-2027, both DST changes of Berlin and New
York inside); each computation picks one of several levels: the repository's sla.yaml
(standard 24 working hours and partner 4 h on Moscow 10:00-19:00 Mon-Fri with RU holidays,
special 1 h round the clock), plus a Berlin 10:00-13:00 + 14:00-19:00 calendar (8 h) and a
New York 09:00-17:00 one (40 h). Timed: one `Calendar.add` (the first-response due time)
per computation. Printed: µs per computation, mean, p50 and p99, first with cold caches
(each day's intervals are computed once per calendar), then warm. The baseline in the
same run is the tests' minute-by-minute reference over `--baseline` computations of the
same kind, and how many of those disagree with `Calendar.add` (should be 0).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maildesk.config.files import load_sla  # noqa: E402
from maildesk.core.businesstime import Calendar, parse_range  # noqa: E402
from tests.core.test_businesstime import ref_add  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_MINUTES = 2 * 365 * 24 * 60


def _week(*ranges: str, days: int = 5) -> tuple[tuple[tuple[int, int], ...], ...]:
    return tuple(tuple(parse_range(r) for r in ranges) if i < days else () for i in range(7))


def levels() -> list[tuple[str, Calendar, int]]:
    sla = load_sla(REPO / "sla.yaml")
    out = [(name, sla.calendar(name), level.first_response_minutes)
           for name, level in sla.levels.items()]
    berlin = Calendar(ZoneInfo("Europe/Berlin"), _week("10:00-13:00", "14:00-19:00"))
    new_york = Calendar(ZoneInfo("America/New_York"), _week("09:00-17:00"))
    return [*out, ("berlin 8h", berlin, 8 * 60), ("new york 40h", new_york, 40 * 60)]


def timed(work: list[tuple[Calendar, datetime, int]],
          compute: Callable[[Calendar, datetime, int], datetime]) -> list[float]:
    out = []
    for calendar, start, minutes in work:
        t0 = time.perf_counter_ns()
        compute(calendar, start, minutes)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def report(label: str, micros: list[float]) -> None:
    ordered = sorted(micros)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{label:<34} {len(micros):>7} computations: mean {statistics.fmean(micros):9.1f} µs"
          f"   p50 {p50:9.1f} µs   p99 {p99:9.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    chosen = levels()

    def work(n: int) -> list[tuple[Calendar, datetime, int]]:
        picks = [rng.choice(chosen) for _ in range(n)]
        return [(cal, START + timedelta(minutes=rng.randrange(SPAN_MINUTES)), minutes)
                for _, cal, minutes in picks]

    print("levels: " + ", ".join(f"{name} ({minutes} min)" for name, _, minutes in chosen))
    main_work = work(args.n)
    report("Calendar.add, cold caches", timed(main_work, Calendar.add))
    report("Calendar.add, warm caches", timed(main_work, Calendar.add))
    base_work = work(args.baseline)

    def brute(calendar: Calendar, start: datetime, minutes: int) -> datetime:
        off = frozenset(  # the reference takes the holidays as dates
            day for day in (start.date() + timedelta(days=d) for d in range(-1, 60))
            if calendar.is_holiday(day)
        )
        return ref_add(calendar.zone, calendar.week, off, start, minutes)

    report("minute-by-minute reference", timed(base_work, brute))
    mismatches = sum(Calendar.add(c, s, m) != brute(c, s, m) for c, s, m in base_work)
    print(f"baseline computations that disagree with Calendar.add: {mismatches}")


if __name__ == "__main__":
    main()
