"""Mail through the real spool and pipeline in this process, without a daemon: for tests
that drive the pipeline or the scheduler's jobs themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Engine

from maildesk.config.runtime import Runtime
from maildesk.core.parse import InboundMail
from maildesk.intake.spool import Spool
from maildesk.work.parsepool import ParserPool, read_mail
from maildesk.work.processor import Processor


def feed(
    engine: Engine,
    runtime: Runtime,
    *mails: bytes,
    parse: Callable[[bytes], InboundMail] = read_mail,
    timeout: float = 10.0,
) -> None:
    """Spool the mails as the listener would, then drain them through the pipeline."""
    async def run() -> None:
        parser = ParserPool(workers=1, timeout=timeout, parse=parse)
        spool = Spool(engine)
        processor = Processor(engine, lambda: runtime, parser)
        spool.start()
        try:
            for raw in mails:
                await spool.accept(raw, "test")
            await processor.drain()
        finally:
            await spool.stop()
            processor.close()
            parser.close()

    asyncio.run(run())
