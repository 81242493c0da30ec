"""Fixtures for the IMAP tests. Import the fixture functions into a test module
(`from tests.intake.conftest_imap import dovecot_fixture`); the fixture is
then available there under the name `dovecot`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from maildesk.config.runtime import load_runtime
from maildesk.config.settings import load_settings
from maildesk.intake.imap import Poller, PollerOptions, parse_mailboxes
from maildesk.intake.spool import Spool
from maildesk.storage.db import make_engine, upgrade
from maildesk.storage.models import Inbound, Ticket
from maildesk.work.parsepool import ParserPool
from maildesk.work.processor import Processor
from tests.conftest import REPO, require_or_skip
from tests.faults import Faults
from tests.intake.dovecot import Dovecot, dovecot_binary, start_dovecot
from tests.mailkit import make_mail


@pytest.fixture(name="dovecot")
def dovecot_fixture() -> Iterator[Dovecot]:
    """A fresh Dovecot per test. Missing Dovecot: skip locally, fail in CI."""
    require_or_skip(
        dovecot_binary() is not None, "dovecot not installed (apt-get install dovecot-imapd)"
    )
    server = start_dovecot()
    yield server
    server.remove()


@dataclass
class Pipeline:
    """The daemon's intake in-process: spool + a processor draining it, as in `maildesk run`."""

    engine: Engine
    spool: Spool
    processor: Processor

    def tickets(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(Ticket)).one())

    def inbound_statuses(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(Inbound.status, func.count()).group_by(Inbound.status)  # type: ignore[arg-type]
            ).all()
        return {str(s): int(n) for s, n in rows}


@asynccontextmanager
async def running_pipeline(database_url: str, data_dir: Path) -> AsyncIterator[Pipeline]:
    settings = load_settings(
        data_dir=data_dir,
        database_url=database_url,
        rules=REPO / "rules.yaml",
        sla=REPO / "sla.yaml",
        templates=REPO / "templates",
        secret="test-secret",
    )
    runtime = load_runtime(settings)
    engine = make_engine(database_url)
    await asyncio.to_thread(upgrade, engine)
    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    # Warm both parser workers (the first parse in a worker loads the language
    # model, about 1 s), so latency tests measure the steady state.
    warm = make_mail(subject="warm-up", body="Hello, this is a warm-up mail.\n")
    await asyncio.gather(*(parser.parse(warm) for _ in range(4)))
    processor = Processor(engine, lambda: runtime, parser)
    spool = Spool(engine, on_stored=processor.wake)
    spool.start()
    processor.idle_seconds = 1.0
    processor.start()
    try:
        yield Pipeline(engine, spool, processor)
    finally:
        await processor.stop()
        await spool.stop()
        parser.close()
        engine.dispose()


@asynccontextmanager
async def running_poller(
    pipeline: Pipeline, url: str, options: PollerOptions | None = None, faults: Faults | None = None
) -> AsyncIterator[Poller]:
    (mailbox,) = parse_mailboxes(url)
    poller = Poller(mailbox, pipeline.engine, pipeline.spool, options, faults or Faults())
    poller.start()
    try:
        yield poller
    finally:
        await poller.stop()
