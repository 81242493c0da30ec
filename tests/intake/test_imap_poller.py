"""The IMAP poller against a real Dovecot, in-process with the real spool and pipeline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from maildesk.intake.imap import PollerOptions
from tests.conftest import eventually
from tests.faults import Faults
from tests.intake.conftest_imap import dovecot_fixture, running_pipeline, running_poller
from tests.intake.dovecot import Dovecot
from tests.mailkit import make_mail

__all__ = ["dovecot_fixture"]

FAST = PollerOptions(poll_seconds=1.0, backoff_first=0.2, backoff_max=1.0)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'maildesk.db'}"


def test_idle_delivers_new_mail_within_two_seconds(dovecot: Dovecot, tmp_path: Path) -> None:
    async def scenario() -> float:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), PollerOptions(poll_seconds=600)) as poller,
        ):
            await eventually(lambda: poller.health()["state"] == "idle")
            started = time.monotonic()
            await asyncio.to_thread(dovecot.append, [make_mail(subject="Idle test")])
            await eventually(lambda: pipe.tickets() == 1, timeout=10, interval=0.02)
            latency = time.monotonic() - started
            await eventually(lambda: dovecot.count("Processed") == 1)
            return latency

    latency = asyncio.run(scenario())
    assert latency < 2.0, f"ticket {latency:.2f} s after the mail arrived"
    assert dovecot.count("INBOX") == 0
    assert all(b"\\Seen" in flags for flags in dovecot.flags("Processed"))


def test_backlog_of_500_becomes_500_tickets_all_moved(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.append(make_mail(subject=f"Backlog {i}", sender=f"c{i}@ex.org") for i in range(500))

    async def scenario() -> None:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), FAST),
        ):
            await eventually(lambda: dovecot.count("Processed") == 500, timeout=60, interval=0.2)
            assert pipe.tickets() == 500
            assert pipe.inbound_statuses() == {"done": 500}

    asyncio.run(scenario())
    assert dovecot.count("INBOX") == 0


def test_poison_message_goes_to_errors_after_five_tries(dovecot: Dovecot, tmp_path: Path) -> None:
    poison = make_mail(subject="Poison", body="POISON-PILL\n")
    dovecot.append([make_mail(subject="before"), poison, make_mail(subject="after")])

    async def scenario() -> None:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), FAST, Faults(poison=b"POISON-PILL")) as poller,
        ):
            # The mails around the poison one flow at once (no head-of-line blocking).
            await eventually(lambda: pipe.tickets() == 2, timeout=10)
            await eventually(lambda: dovecot.count("maildesk-errors") == 1, timeout=30)
            await asyncio.to_thread(dovecot.append, [make_mail(subject="later")])
            await eventually(lambda: dovecot.count("Processed") == 3, timeout=10)
            assert pipe.tickets() == 3
            statuses = pipe.inbound_statuses()
            assert statuses == {"done": 3, "failed": 1}
            assert poller.health()["failing"] == 0

    asyncio.run(scenario())
    assert dovecot.count("INBOX") == 0


def test_dovecot_restart_mid_idle_reconnects(dovecot: Dovecot, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), FAST) as poller,
        ):
            await asyncio.to_thread(dovecot.append, [make_mail(subject="before restart")])
            await eventually(lambda: pipe.tickets() == 1)
            await eventually(lambda: poller.health()["state"] == "idle")
            await asyncio.to_thread(dovecot.stop)
            await eventually(lambda: poller.health()["state"] in ("backoff", "connecting"))
            assert poller.health()["last_error"]
            await asyncio.to_thread(dovecot.start)  # same directory, same port
            await asyncio.to_thread(dovecot.append, [make_mail(subject="during restart")])
            await eventually(lambda: pipe.tickets() == 2, timeout=20)
            await eventually(lambda: dovecot.count("Processed") == 2)
            await eventually(lambda: poller.health()["state"] == "idle")
            assert poller.health()["last_error"] is None

    asyncio.run(scenario())


@pytest.mark.parametrize("idle", [True, False], ids=["in-idle", "polling"])
def test_uidvalidity_reset_rescans_without_duplicates(
    dovecot: Dovecot, tmp_path: Path, idle: bool
) -> None:
    if not idle:
        dovecot.reconfigure("imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE\n")
    first = [make_mail(subject=f"first {i}", message_id=f"<uv-{i}@client.example>") for i in (1, 2)]
    again = [*first, make_mail(subject="third", message_id="<uv-3@client.example>")]
    dovecot.append(first, folder="Support")

    def recreate() -> None:
        with dovecot.client() as client:
            client.delete_folder("Support")
            client.create_folder("Support")
            for raw in again:
                client.append("Support", raw)

    async def scenario() -> None:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(folder="Support"), FAST) as poller,
        ):
            await eventually(lambda: dovecot.count("Processed") == 2)
            # Recreate the folder under the running poller (an admin's migration
            # does this): Dovecot then answers IDLE with NO, and STATUS on the
            # selected folder keeps the old UIDVALIDITY on this connection.
            await eventually(lambda: poller.health()["state"] == ("idle" if idle else "polling"))
            old = poller.health()["uidvalidity"]
            await asyncio.to_thread(recreate)
            try:
                await eventually(lambda: dovecot.count("Processed") == 5, timeout=30)
            except AssertionError as exc:  # say what state it got stuck in
                raise AssertionError(
                    f"{exc}; poller {poller.health()}; inbound {pipe.inbound_statuses()}; "
                    f"folders {dovecot.counts(['Support', 'Processed', 'maildesk-errors'])}"
                ) from None
            assert poller.health()["uidvalidity"] != old
            assert pipe.tickets() == 3
            assert pipe.inbound_statuses() == {"done": 3, "duplicate": 2}

    asyncio.run(scenario())
    assert dovecot.count("Support") == 0


def test_mail_over_parse_bounds_is_kept_and_moved_to_errors_at_once(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    filler = {f"X-Filler-{n}": "x" for n in range(2_100)}  # over the header-line bound
    dovecot.append([make_mail(subject="monster", headers=filler), make_mail(subject="fine")])

    async def scenario() -> None:
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), PollerOptions(poll_seconds=600)) as poller,
        ):
            await eventually(lambda: dovecot.counts(["maildesk-errors", "Processed"])
                             == {"maildesk-errors": 1, "Processed": 1})
            assert pipe.inbound_statuses() == {"done": 1, "failed": 1}
            assert poller.counts["errors"] == 1

    asyncio.run(scenario())
    assert dovecot.count("INBOX") == 0


@pytest.mark.parametrize(
    "capabilities",
    ["IMAP4rev1 LITERAL+ UIDPLUS", "IMAP4rev1 LITERAL+"],
    ids=["copy-uid-expunge", "copy-expunge"],
)
def test_server_without_idle_or_move_is_polled(
    dovecot: Dovecot, tmp_path: Path, capabilities: str
) -> None:
    dovecot.reconfigure(f"imap_capability = {capabilities}\n")
    dovecot.append([make_mail(subject=f"polled {i}") for i in range(3)])

    async def scenario() -> None:
        options = PollerOptions(poll_seconds=0.5)
        async with (
            running_pipeline(sqlite_url(tmp_path), tmp_path / "data") as pipe,
            running_poller(pipe, dovecot.url(), options) as poller,
        ):
            await eventually(lambda: dovecot.count("Processed") == 3)
            await asyncio.to_thread(dovecot.append, [make_mail(subject="polled later")])
            await eventually(lambda: dovecot.count("Processed") == 4)
            assert poller.health()["state"] == "polling"
            assert pipe.tickets() == 4

    asyncio.run(scenario())
    assert dovecot.count("INBOX") == 0  # expunged, nothing left flagged \Deleted
