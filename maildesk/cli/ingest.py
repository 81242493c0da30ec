"""`maildesk ingest`: saved mail through the spool and the same pipeline as live mail.

Importing an old mailbox must not write to every historical sender: by default a
mail dated more than a day ago (or not dated at all) is stored and threaded but
sends nothing; `--notify` / `--no-notify` decide for every mail instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from rich.progress import Progress
from sqlalchemy import Engine

from maildesk.config.runtime import Runtime
from maildesk.core.parse import InboundMail
from maildesk.intake.sources import count_messages, iter_messages, not_mail
from maildesk.intake.spool import Spool
from maildesk.spam.model import SpamFilter, SpamThresholds
from maildesk.work.handle import NotifyPolicy
from maildesk.work.parsepool import ParserPool
from maildesk.work.processor import DrainStats, Processor

CHUNK = 200
RECENT = timedelta(days=1)


def notify_policy(choice: bool | None) -> NotifyPolicy:
    """True: every mail sends its confirmations and notifications; False: none does;
    None (the default): only mail dated within the last day."""
    if choice is not None:
        return lambda _mail, _now: choice

    def recent(mail: InboundMail, now: datetime) -> bool:
        return mail.date is not None and mail.date.tzinfo is not None and now - mail.date < RECENT

    return recent


@dataclass
class IngestStats(DrainStats):
    refused: list[str] = field(default_factory=list)  # "label: why" for files that are not mail


async def ingest_paths(
    engine: Engine,
    runtime: Runtime,
    paths: Sequence[Path],
    progress: Progress | None = None,
    notify: NotifyPolicy | None = None,
) -> IngestStats:
    total = count_messages(paths)
    task = progress.add_task("ingesting", total=total) if progress else None
    parser = ParserPool(timeout=runtime.settings.parse_timeout_seconds)
    spool = Spool(engine)
    settings = runtime.settings
    spam = SpamFilter.load(
        settings.spam_model_path, SpamThresholds(settings.spam_ham_below, settings.spam_spam_above)
    )
    processor = Processor(engine, lambda: runtime, parser, spam_filter=lambda: spam, notify=notify)
    spool.start()
    stats = IngestStats()

    def advance(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    try:
        chunk: list[tuple[str, bytes]] = []
        for item in iter_messages(paths):
            why = not_mail(item[1])
            if why is not None:
                stats.refused.append(f"{item[0]}: {why}; skipped")
                advance(1)
                continue
            chunk.append(item)
            if len(chunk) >= CHUNK:
                await _one_chunk(spool, processor, chunk, stats, advance)
                chunk = []
        if chunk:
            await _one_chunk(spool, processor, chunk, stats, advance)
    finally:
        await spool.stop()
        processor.close()
        parser.close()
    return stats


async def _one_chunk(
    spool: Spool,
    processor: Processor,
    chunk: list[tuple[str, bytes]],
    stats: DrainStats,
    advance: object,
) -> None:
    await asyncio.gather(*(spool.accept(raw, f"file:{label}") for label, raw in chunk))
    result = await processor.drain(progress=advance)  # type: ignore[arg-type]
    stats.processed += result.processed
    stats.duplicates += result.duplicates
    stats.failed += result.failed
    stats.tickets |= result.tickets
