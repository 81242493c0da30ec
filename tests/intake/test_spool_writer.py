"""The spool's writer: a mail's future is set only once its record is on disk, mails
waiting together share one write and fdatasync, a failed write fails only its group
(the next mail goes to a new segment), and a stop writes what was queued."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from maildesk.intake.spool_file import SUFFIX, Segment, read_records
from maildesk.intake.spool_writer import SpoolWriter
from tests.mailkit import make_mail


def _on_disk(directory: Path) -> list[str]:
    """The spool keys readable in the directory's segments, in order."""
    keys: list[str] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        fd = os.open(path, os.O_RDONLY)
        try:
            read = read_records(fd, 0, os.fstat(fd).st_size, 1 << 20, 1 << 40)
        finally:
            os.close(fd)
        assert read.damage is None, read.damage
        keys += [r.key for r in read.records]
    return keys


def test_every_answer_comes_after_its_record_is_on_disk_and_mails_share_writes(
    tmp_path: Path,
) -> None:
    ends: list[int] = []
    reported: set[str] = set()  # the keys readable up to the last durable end reported

    def durable(segment: Segment) -> None:
        ends.append(segment.end)
        read = read_records(segment.fd, 0, segment.end, 1 << 20, 1 << 40)
        if read.damage is None and read.end == segment.end:  # else: nothing counts
            reported.update(r.key for r in read.records)

    async def run() -> tuple[list[str], list[bool]]:
        writer = SpoolWriter(tmp_path, durable)
        writer.start()
        reported_when_answered: list[bool] = []

        async def one(i: int) -> str:
            key = await writer.write(make_mail(subject=f"mail {i}"), "smtp", "a@b.c", ["s@x"])
            reported_when_answered.append(key in reported)
            return key

        keys = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 30)
        await writer.stop()
        return list(keys), reported_when_answered

    keys, answered_after_report = asyncio.run(run())
    assert len(set(keys)) == 200
    assert _on_disk(tmp_path) == keys  # in the order submitted, nothing twice
    assert all(answered_after_report)  # answered only once reported durable
    assert 1 <= len(ends) < 200  # grouped: fewer writes than mails
    assert ends == sorted(ends)  # each report moves the durable end forward


def test_a_stop_writes_what_was_queued_and_later_mail_is_refused(tmp_path: Path) -> None:
    async def run() -> tuple[list[str], list[asyncio.Future[None]]]:
        writer = SpoolWriter(tmp_path, lambda segment: None)
        writer.start()
        queued = [
            writer.submit(make_mail(subject=f"m{i}"), "smtp", None, ["s@x"]) for i in range(50)
        ]
        await asyncio.wait_for(writer.stop(), 30)
        try:
            writer.submit(b"late", "smtp", None, [])
        except RuntimeError:
            pass
        else:
            raise AssertionError("a stopped writer took mail")
        return [k for k, _ in queued], [f for _, f in queued]

    keys, futures = asyncio.run(run())
    assert all(f.done() and f.exception() is None for f in futures)
    assert _on_disk(tmp_path) == keys


def test_the_file_is_zeroed_ahead_so_a_group_changes_no_file_size(tmp_path: Path) -> None:
    """Groups are written over zeros laid ahead of them: the file's size does not move
    with each group (so its fdatasync needs no filesystem journal commit), and the zeros
    after the last record read as the end, not as damage."""
    seen: list[tuple[int, int]] = []  # (durable end, file size) at each report

    def durable(segment: Segment) -> None:
        seen.append((segment.end, segment.path.stat().st_size))

    async def run() -> None:
        writer = SpoolWriter(tmp_path, durable)
        writer.start()
        for i in range(50):  # one at a time: 50 groups
            await writer.write(make_mail(subject=f"mail {i}"), "smtp", "a@b.c", ["s@x"])
        await writer.stop()

    asyncio.run(run())
    assert len(seen) == 50
    sizes = {size for _, size in seen}
    assert len(sizes) == 1, sizes  # zeroed once, ahead of all 50 groups
    assert all(end < size for end, size in seen)
    assert len(_on_disk(tmp_path)) == 50  # the zero tail is no damage


_FAILING = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from pathlib import Path
    from maildesk.intake.spool_writer import SpoolWriter

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
    limit = int(sys.argv[2])

    async def main() -> None:
        writer = SpoolWriter(Path(sys.argv[1]), lambda segment: None)
        writer.start()
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        for i in range(12):
            try:
                key = await writer.write(bytes([65 + i]) * 3000, "smtp", None, ["s@x"])
                print("stored", key, flush=True)
            except OSError as exc:
                print("refused", type(exc).__name__, flush=True)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit * 4, hard))
        await writer.stop()

    asyncio.run(main())
    """
)


def test_a_failed_write_refuses_its_mail_keeps_the_others_and_moves_on(
    tmp_path: Path,
) -> None:
    """A write the kernel refuses (here: the file size limit, EFBIG) fails that mail
    only: the mails before it stay readable, the segment is cut back and sealed, and
    the next mail goes to a new segment."""
    spool = tmp_path / "spool"
    out = subprocess.run(
        [sys.executable, "-c", _FAILING, str(spool), "10000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )
    lines = out.stdout.splitlines()
    refused = [n for n, line in enumerate(lines) if line.startswith("refused")]
    assert refused == [3], out.stdout + out.stderr  # 3 records fit under 10,000 bytes
    assert "could not store 1 mail(s)" in out.stderr
    stored = [line.split()[1] for line in lines if line.startswith("stored")]
    assert len(stored) == 11
    assert _on_disk(spool) == stored  # the refused one is not on disk, nothing is torn
    segments = sorted(spool.glob(f"*{SUFFIX}"))
    assert len(segments) == 2
