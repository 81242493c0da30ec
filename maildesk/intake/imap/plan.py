"""The poller's settings, states and pure planning rules (no IO)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from maildesk.intake.imap.lease import LEASE_RETRY_SECONDS

IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: servers may drop an IDLE after 30 min


class PollerState(StrEnum):
    CONNECTING = "connecting"
    POLLING = "polling"
    IDLE = "idle"
    BACKOFF = "backoff"
    AUTH_FAILED = "auth_failed"
    STANDBY = "standby"  # another instance holds the lease
    STOPPED = "stopped"


@dataclass(frozen=True)
class PollerOptions:
    done_folder: str = "Processed"
    errors_folder: str = "maildesk-errors"
    poll_seconds: float = 60.0
    max_failures: int = 5
    batch_mails: int = 250
    batch_bytes: int = 32 * 1024 * 1024
    backoff_first: float = 1.0
    backoff_max: float = 60.0
    auth_retry_seconds: float = 300.0
    lease_retry_seconds: float = LEASE_RETRY_SECONDS
    idle_renew_seconds: float = IDLE_RENEW_SECONDS
    verdict_stall_seconds: float = 60.0


def backoff_delay(attempt: int, first: float, cap: float) -> float:
    """1, 2, 4, ... seconds, capped. A three-line rule needs no retry library."""
    return float(min(cap, first * (2 ** min(attempt, 30))))


def plan_batches(
    uids: Sequence[int], sizes: dict[int, int], max_mails: int, max_bytes: int
) -> list[list[int]]:
    """Split UIDs (in order) into batches of at most `max_mails` mails and about
    `max_bytes` bytes; a single mail larger than that gets a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    weight = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= max_mails or weight + size > max_bytes):
            batches.append(current)
            current, weight = [], 0
        current.append(uid)
        weight += size
    if current:
        batches.append(current)
    return batches
