"""Several instances on one PostgreSQL: exactly one polls a mailbox; a standby takes over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from maildesk.intake.imap import Poller, PollerOptions, parse_mailboxes
from tests.conftest import eventually, new_database_url
from tests.intake.conftest_imap import dovecot_fixture, running_pipeline
from tests.intake.dovecot import Dovecot
from tests.mailkit import make_mail

__all__ = ["dovecot_fixture"]

OPTIONS = PollerOptions(poll_seconds=2.0, lease_retry_seconds=0.5)


def test_one_poller_per_mailbox_and_takeover(
    dovecot: Dovecot, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = new_database_url("postgresql", tmp_path, request)
    (mailbox,) = parse_mailboxes(dovecot.url())

    async def scenario() -> None:
        async with running_pipeline(url, tmp_path / "data") as pipe:
            first = Poller(mailbox, pipe.engine, pipe.spool, OPTIONS)
            second = Poller(mailbox, pipe.engine, pipe.spool, OPTIONS)
            first.start()
            await eventually(lambda: first.health()["state"] == "idle")
            second.start()
            try:
                await eventually(lambda: second.health()["state"] == "standby")
                mails = [make_mail(subject=f"lease {i}") for i in range(3)]
                await asyncio.to_thread(dovecot.append, mails)
                await eventually(lambda: dovecot.count("Processed") == 3)
                await asyncio.sleep(1.5)  # the standby retried the lease meanwhile
                assert second.health()["state"] == "standby"
                assert (first.counts["ingested"], second.counts["ingested"]) == (3, 0)

                await first.stop()  # the first instance goes away
                await asyncio.to_thread(dovecot.append, [make_mail(subject="after")])
                await eventually(lambda: dovecot.count("Processed") == 4, timeout=20)
                assert second.counts["ingested"] == 1
            finally:
                await first.stop()
                await second.stop()
            assert pipe.tickets() == 4
            assert pipe.inbound_statuses() == {"done": 4}

    asyncio.run(scenario())
