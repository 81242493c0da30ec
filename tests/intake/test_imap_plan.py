"""The poller's pure helpers: UID sets, batch planning, backoff, test fault hooks."""

from __future__ import annotations

import pytest

from maildesk.intake.imap.plan import backoff_delay, plan_batches
from maildesk.intake.imap.session import uid_set
from tests.faults import Faults, InjectedFault


@pytest.mark.parametrize(
    ("uids", "expected"),
    [
        ([], ""),
        ([5], "5"),
        ([1, 2, 3, 7, 9, 10], "1:3,7,9:10"),
        ([10, 9, 3, 2, 1, 2], "1:3,9:10"),
    ],
)
def test_uid_set(uids: list[int], expected: str) -> None:
    assert uid_set(uids) == expected


@pytest.mark.parametrize(
    ("sizes", "max_mails", "max_bytes", "expected"),
    [
        ({1: 10, 2: 10, 3: 10}, 2, 1000, [[1, 2], [3]]),
        ({1: 600, 2: 600, 3: 10}, 10, 1000, [[1], [2, 3]]),
        ({1: 5000, 2: 10}, 10, 1000, [[1], [2]]),  # an oversized mail gets a batch of its own
        ({}, 10, 1000, []),
    ],
)
def test_plan_batches(
    sizes: dict[int, int], max_mails: int, max_bytes: int, expected: list[list[int]]
) -> None:
    assert plan_batches(sorted(sizes), sizes, max_mails, max_bytes) == expected


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000, 1.0, 60.0) == 60


def test_fault_hooks_fire_only_on_their_mail() -> None:
    with pytest.raises(InjectedFault):
        Faults(poison=b"BAD").before_ingest(1, b"a BAD mail")
    Faults(poison=b"BAD").before_ingest(1, b"a good mail")
    Faults().before_move([1, 2])  # no fault asked for: nothing happens
