"""Mail from an IMAP batch into the spool, and the pipeline's verdicts back: what the
poller does between fetching a batch and moving it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from maildesk.errors import TransientError
from maildesk.intake.imap.plan import PollerOptions
from maildesk.intake.imap.records import Verdict, record_failed, verdicts_of
from maildesk.intake.spool import Spool

log = logging.getLogger("maildesk.intake.imap.poller")


class PollerHooks:
    """Points where a test can make the poller fail (tests/faults.py); no-ops here."""

    def before_ingest(self, uid: int, raw: bytes) -> None:
        """Called for each fetched mail before it is spooled."""

    def before_move(self, uids: Sequence[int]) -> None:
        """Called after the pipeline committed these mails, before they are moved."""


NO_HOOKS = PollerHooks()


@dataclass
class Spooled:
    """A batch handed to the pipeline, waiting for its verdicts."""

    uids: list[int]
    ids: dict[int, int]  # uid -> inbound id
    errors: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # uid -> (why, raw)


async def spool_batch(
    spool: Spool, hooks: PollerHooks, source: Callable[[int], str], uids: list[int],
    mails: dict[int, bytes | None],
) -> Spooled:
    """Spool the batch durably; per-mail failures are noted, not raised."""
    batch = Spooled(uids=uids, ids={})
    ready: dict[int, bytes] = {}
    for uid in uids:
        if uid not in mails:
            continue  # expunged meanwhile
        raw = mails[uid]
        if raw is None:
            batch.errors[uid] = ("the server returned no message body", b"")
            continue
        try:
            hooks.before_ingest(uid, raw)
        except Exception as exc:
            batch.errors[uid] = (one_line(exc), raw)
            continue
        ready[uid] = raw
    if not ready:
        return batch
    results = await asyncio.gather(
        *(spool.accept(raw, source(uid)) for uid, raw in ready.items()),
        return_exceptions=True,
    )
    failed: dict[int, BaseException] = {}
    for uid, result in zip(ready, results, strict=True):
        if isinstance(result, BaseException):
            failed[uid] = result
        else:
            batch.ids[uid] = result
    if failed and len(failed) > 1:
        # One transaction for all: find out which mail (if any) is to blame.
        for uid in list(failed):
            try:
                batch.ids[uid] = await spool.accept(ready[uid], source(uid))
                del failed[uid]
            except Exception as again:
                failed[uid] = again
    if failed and not batch.ids:
        first = next(iter(failed.values()))
        raise TransientError(f"could not store mail in the spool: {one_line(first)}")
    for uid, problem in failed.items():
        batch.errors[uid] = (f"spool: {one_line(problem)}", ready[uid])
    return batch


async def wait_for_verdicts(
    engine: Engine, ids: dict[int, int], wait: bool, stall_seconds: float, label: str
) -> dict[int, Verdict | None]:
    """Poll the inbound rows until the pipeline has decided each (None: not yet)."""
    remaining = dict(ids)
    out: dict[int, Verdict | None] = {}
    pause = 0.02
    progress_at = time.monotonic()
    while remaining:
        rows = await asyncio.to_thread(verdicts_of, engine, list(remaining.values()))
        for uid, inbound_id in list(remaining.items()):
            verdict = rows.get(inbound_id)
            if verdict is not None:
                out[uid] = verdict
                del remaining[uid]
                progress_at = time.monotonic()
        if not remaining or not wait:
            break
        if time.monotonic() - progress_at > stall_seconds:
            log.warning(
                "imap %s: pipeline has not finished %d mail(s) yet; leaving them in place",
                label,
                len(remaining),
            )
            break
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    out.update(dict.fromkeys(remaining))
    return out


def record_poison(
    engine: Engine, items: list[tuple[int, str, bytes]], options: PollerOptions, label: str,
    source: Callable[[int], str],
) -> None:
    """Mail that failed to ingest too often: logged, and kept raw as a failed inbound row."""
    for uid, why, _ in items:
        log.error(
            "imap %s: uid %d failed %d times, moving it to %s: %s",
            label,
            uid,
            options.max_failures,
            options.errors_folder,
            why,
        )
    note = f"IMAP ingest failed {options.max_failures} times; moved to "
    note += options.errors_folder
    try:
        record_failed(
            engine,
            [(source(uid), raw, f"{note}: {why}") for uid, why, raw in items],
            options.max_failures,
        )
    except SQLAlchemyError as exc:  # the log line above is then the only record
        log.error("imap %s: could not record the failed mail(s): %s", label, exc)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
