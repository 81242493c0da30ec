"""A round of the outbox cancelled at stop (after its claim, before its record) does not
leave its mails leased for LEASE: the next flush, the last one at shutdown, sends them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session, select

from maildesk.storage.db import make_engine, upgrade
from maildesk.storage.models import Outbox
from maildesk.work.outbox import OutboxSender
from maildesk.work.transports import MaildirTransport
from tests.mailkit import queue_outbox


class FirstBatchHangs(MaildirTransport):
    """A real Maildir; its first batch hangs until the round is cancelled (a stop)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = asyncio.Event()
        self.calls = 0

    async def send_many(self, mails: Sequence[tuple[str, bytes]]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await asyncio.Event().wait()  # until cancelled
        await super().send_many(mails)


def test_mails_of_a_round_cancelled_after_its_claim_go_out_with_the_next_flush(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'md.db'}")
    upgrade(engine)
    queue_outbox(engine, ["ann@example.org"] * 2, "stop")

    async def scenario() -> int:
        transport = FirstBatchHangs(tmp_path / "outbox")
        sender = OutboxSender(engine, transport)
        round_ = asyncio.create_task(sender.flush())
        await asyncio.wait_for(transport.entered.wait(), 10)
        round_.cancel()  # what Worker.stop does to a round in progress
        await asyncio.gather(round_, return_exceptions=True)
        return (await sender.flush()).sent

    assert asyncio.run(scenario()) == 2
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 2
    engine.dispose()


class Fussy:
    """A relay transport that fails with an error nobody planned for, for one address."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    async def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        if recipients == ["poison@example.org"]:
            raise ValueError("an unforeseen fault with this one mail")
        self.sent.append(recipients)


def test_an_unforeseen_fault_with_one_mail_does_not_hold_up_the_others(
    tmp_path: Path,
) -> None:
    """The faulty mail is retried later, its error kept; the mails after it in the
    same batch go out in this round."""
    engine = make_engine(f"sqlite:///{tmp_path / 'md.db'}")
    upgrade(engine)
    queue_outbox(engine, ["poison@example.org", "ann@example.org", "bob@example.org"], "fault")
    transport = Fussy()
    stats = asyncio.run(OutboxSender(engine, transport).flush())  # type: ignore[arg-type]
    assert transport.sent == [["ann@example.org"], ["bob@example.org"]]
    assert (stats.sent, stats.retried) == (2, 1)
    with Session(engine) as session:
        (poison,) = session.exec(select(Outbox).where(Outbox.status == "queued")).all()
    assert poison.recipients == ["poison@example.org"]
    assert poison.last_error == "ValueError: an unforeseen fault with this one mail"
    engine.dispose()
