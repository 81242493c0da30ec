"""The Maildir transport: every mail of a batch lands whole
in new/ exactly once, a batch delivered again after a crash adds nothing, and a mail
left half-written in tmp/ by a crash is replaced, not renamed as it was."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

from maildesk.work.transports import MaildirTransport


def _mail(n: int) -> bytes:
    return (f"Message-ID: <m{n}@maildesk>\r\nSubject: mail {n}\r\n\r\n" + "body line\r\n" * n
            ).encode()


def test_a_batch_lands_whole_once_and_a_redelivery_adds_nothing(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "out")
    batch = [(f"<m{n}@maildesk>", _mail(n)) for n in range(1, 40)]
    asyncio.run(transport.send_many(batch))
    asyncio.run(transport.send_many([*batch[10:20], ("<m99@maildesk>", _mail(99))]))

    box = mailbox.Maildir(str(tmp_path / "out"), create=False)
    subjects = sorted(str(m["Subject"]) for m in box)
    assert subjects == sorted(f"mail {n}" for n in [*range(1, 40), 99])
    files = sorted(f.read_bytes() for f in (tmp_path / "out" / "new").iterdir())
    assert files == sorted(_mail(n) for n in [*range(1, 40), 99])
    assert not list((tmp_path / "out" / "tmp").iterdir())


def test_a_half_written_file_left_in_tmp_by_a_crash_is_replaced(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "out")
    name = transport._name("<m5@maildesk>")
    (tmp_path / "out" / "tmp" / name).write_bytes(_mail(500))  # longer than the real one
    asyncio.run(transport.send_many([("<m5@maildesk>", _mail(5))]))
    assert (tmp_path / "out" / "new" / name).read_bytes() == _mail(5)
