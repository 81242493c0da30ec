"""The spool file: damage is found and reported, replay is idempotent, and a crash
between the spool's fsync and the database loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from maildesk.intake.spool import Spool, spool_dir
from maildesk.intake.spool_file import HEADER, Record, encode
from maildesk.storage.db import is_postgres
from tests.conftest import Daemon, wait_for
from tests.daemon.test_durability import _alive, _descendants
from tests.mailkit import make_mail


def _records(n: int) -> list[Record]:
    return [
        Record(
            f"test0001-{i}",
            1.7e9 + i,
            "smtp",
            f"c{i}@example.org",
            "support@localhost",
            make_mail(subject=f"Spooled {i}", message_id=f"<spooled-{i}@example.org>"),
        )
        for i in range(n)
    ]


def _replay(engine: Engine, directory: Path) -> None:
    """Start a spool on the directory (it adopts what is there), let it replay, stop."""

    async def run() -> None:
        spool = Spool(engine, directory=directory)
        spool.start()
        await spool.stop(timeout=10)

    asyncio.run(run())


def _stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [str(k) for (k,) in conn.execute(text("select spool_key from inbound order by id"))]


def test_a_torn_tail_is_reported_and_the_records_before_it_are_stored(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [encode(r) for r in _records(4)]
    segment = tmp_path / "spool" / "00000001deadbeef-000001.seg"
    segment.parent.mkdir()
    torn = records[3][: len(records[3]) // 2]  # a write cut off by a crash
    segment.write_bytes(b"".join(records[:3]) + torn)
    with caplog.at_level(logging.WARNING, logger="maildesk"):
        _replay(engine, segment.parent)
    assert _stored(engine) == [f"test0001-{i}" for i in range(3)]
    damage = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(damage) == 1, [r.getMessage() for r in damage]
    message = damage[0].getMessage()
    assert f"damaged record at byte {sum(map(len, records[:3]))}" in message
    assert "the 3 records before it are stored" in message
    assert "never got a 250" in message
    assert not segment.exists()
    assert segment.with_suffix(".bad").read_bytes().endswith(torn)  # kept for a human


def test_zeros_after_the_last_record_are_the_end_but_zeros_before_one_are_damage(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that died leaves its zeroed-ahead tail: replayed without a word. Zeros
    where a record should be, with a record after them, are reported as damage."""
    records = [encode(r) for r in _records(4)]
    directory = tmp_path / "spool"
    directory.mkdir()
    clean = directory / "00000001deadbeef-000001.seg"
    clean.write_bytes(b"".join(records[:2]) + bytes(1 << 20))
    holed = directory / "00000001deadbeef-000002.seg"
    holed.write_bytes(records[2] + bytes(4096) + records[3] + bytes(100))
    with caplog.at_level(logging.WARNING, logger="maildesk"):
        _replay(engine, directory)
    assert _stored(engine) == [f"test0001-{i}" for i in range(4)]
    damage = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(damage) == 1, damage
    assert f"{holed}: damaged record at byte {len(records[2])} (no record marker)" in damage[0]
    assert f"intact records resume at byte {len(records[2]) + 4096}" in damage[0]
    assert sorted(p.name for p in directory.iterdir()) == ["00000001deadbeef-000002.bad"]


def test_a_corrupt_record_mid_file_loses_only_itself_and_replay_is_idempotent(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [encode(r) for r in _records(4)]
    corrupt = bytearray(records[1])
    corrupt[HEADER.size + 40] ^= 0xFF  # a flipped bit: the checksum no longer matches
    directory = tmp_path / "spool"
    directory.mkdir()
    content = records[0] + bytes(corrupt) + records[2] + records[3]
    (directory / "00000001deadbeef-000001.seg").write_bytes(content)
    twice = directory / "00000001deadbeef-000002.seg"  # a segment replayed before a crash
    twice.write_bytes(records[0] + records[3])
    with caplog.at_level(logging.ERROR, logger="maildesk"):
        _replay(engine, directory)
    assert sorted(_stored(engine)) == ["test0001-0", "test0001-2", "test0001-3"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "checksum mismatch" in errors[0], errors
    assert f"intact records resume at byte {len(records[0]) + len(corrupt)}" in errors[0]
    shutil.copy(directory / "00000001deadbeef-000001.bad", directory / "again.seg")
    _replay(engine, directory)  # the same records once more: nothing stored twice
    assert sorted(_stored(engine)) == ["test0001-0", "test0001-2", "test0001-3"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "00000001deadbeef-000001.bad",
        "again.bad",
    ]


def _hold_inbound_lock(engine: Engine) -> tuple[Callable[[], int], Callable[[], None]]:
    """Keep every writer out of `inbound` until released; returns (count the inbound
    rows, release)."""
    conn = engine.raw_connection()
    cursor = conn.cursor()
    if is_postgres(engine):
        cursor.execute("begin")
        cursor.execute("lock table inbound in exclusive mode")
    else:
        cursor.execute("begin immediate")  # the database's write lock

    def count() -> int:
        cursor.execute("select count(*) from inbound")
        return int(cursor.fetchone()[0])

    def release() -> None:
        conn.rollback()
        conn.close()

    return count, release


def test_sigkill_after_the_spool_fsync_before_the_database_loses_nothing(
    start_daemon: Callable[..., Daemon],
) -> None:
    """SMTP answers 250 while the database takes no writes at all (the 250 path never
    waits for it); the daemon is killed before the replay; the restart stores each mail
    once."""
    daemon = start_daemon(MAILDESK_AUTO_REPLY_LIMIT_PER_HOUR="1000")
    count, release = _hold_inbound_lock(daemon.engine)
    try:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            replies = [
                client.sendmail(
                    f"c{i}@example.org",
                    ["support@localhost"],
                    make_mail(
                        sender=f"c{i}@example.org",
                        subject=f"Crash {i}",
                        message_id=f"<crash-{i}@example.org>",
                    ),
                )
                for i in range(20)
            ]
        assert replies == [{}] * 20  # every mail accepted
        assert count() == 0  # none reached the database
        assert daemon.proc is not None
        children = _descendants(daemon.proc.pid)
        daemon.stop(signal.SIGKILL)
        wait_for(lambda: not any(_alive(c) for c in children), timeout=10)
    finally:
        release()
    data_dir = Path(daemon.env["MAILDESK_DATA_DIR"])
    assert list(spool_dir(data_dir).glob("*.seg"))  # the mail is in the spool file only
    daemon.start()
    wait_for(lambda: daemon.scalar("select count(*) from ticket") == 20, timeout=60)
    assert daemon.scalar("select count(*) from inbound") == 20
    assert daemon.scalar("select count(distinct spool_key) from inbound") == 20
    assert daemon.scalar("select count(*) from outbox where kind = 'confirmation'") == 20
    wait_for(lambda: not list(spool_dir(data_dir).glob("*.seg")), timeout=20)
    assert not list(spool_dir(data_dir).glob("*.bad"))
    assert "replaying 1 segment(s)" in daemon.log() or "replaying 2 segment(s)" in daemon.log()
    assert os.stat(spool_dir(data_dir)).st_mode & 0o777 == 0o700
