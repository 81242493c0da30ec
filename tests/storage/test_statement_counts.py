"""SQL statements per mail stay where issue 9 brought them (not a timing test).

bench/sqlprobe.py runs the pipeline's commit step on a real SQLite database for a
batch of new tickets, a batch of replies to them and a batch of duplicates, and
counts what the driver is handed (SQLAlchemy `before_cursor_execute`; BEGIN and
SAVEPOINTs included, amortised over the batch; an executemany counts once).
A change that adds a query to the flow of a mail fails here: either take it out
again, or raise the ceiling here with the reason in the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sqlprobe import measure

# Reached in the speed work of issue 9; 81b4fae (before it) had 27.05 / 18.05 / 6.05, and
# 2356585 11.35 / 9.20 / 0.20 (before the batch write buffer, maildesk.storage.pending),
# a5136a2 3.50 / 4.35 / 0.20 (before changed tickets waited for the commit), and
# 226dc68 3.50 / 3.40 / 0.20 (before a chunk read its senders' facts and the staff's
# notification counts once), and 1.60 / 3.40 / 0.20 (before new tickets waited in the buffer
# with their ids taken ahead), and 0.70 / 3.40 / 0.20 (chunks of 20 mails, not 50).
CEILINGS = {"new": 0.30, "reply": 3.20, "duplicate": 0.10}


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    where: Path = tmp_path_factory.mktemp("sqlprobe")
    return measure(f"sqlite:///{where / 'maildesk.db'}", where / "data")


@pytest.mark.parametrize("kind", sorted(CEILINGS))
def test_statements_per_mail_do_not_grow(counted: dict[str, float], kind: str) -> None:
    assert counted[kind] <= CEILINGS[kind] + 1e-9, (
        f"{counted[kind]:.2f} statements per {kind} mail, ceiling {CEILINGS[kind]:.2f}; "
        f"by kind: {counted['kinds'][kind]}"
    )
