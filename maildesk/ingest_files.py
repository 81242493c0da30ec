"""`maildesk ingest`: saved mail through the spool and the same pipeline as live mail."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from rich.progress import Progress
from sqlalchemy import Engine

from maildesk.parsepool import ParserPool
from maildesk.processor import DrainStats, Processor
from maildesk.runtime import Runtime
from maildesk.sources import count_messages, iter_messages
from maildesk.spam.model import SpamFilter, SpamThresholds
from maildesk.spool import Spool

CHUNK = 200


async def ingest_paths(
    engine: Engine, runtime: Runtime, paths: Sequence[Path], progress: Progress | None = None
) -> DrainStats:
    total = count_messages(paths)
    task = progress.add_task("ingesting", total=total) if progress else None
    parser = ParserPool(timeout=runtime.settings.parse_timeout_seconds)
    spool = Spool(engine)
    settings = runtime.settings
    spam = SpamFilter.load(
        settings.spam_model_path, SpamThresholds(settings.spam_ham_below, settings.spam_spam_above)
    )
    processor = Processor(engine, lambda: runtime, parser, spam_filter=lambda: spam)
    spool.start()
    stats = DrainStats()

    def advance(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    try:
        chunk: list[tuple[str, bytes]] = []
        for item in iter_messages(paths):
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
