"""One IMAP connection against a real Dovecot when another client recreates its folder.

An admin's migration (or a client) may delete and recreate the very folder a
running poller has selected. The poller's connection must notice: Dovecot
then answers IDLE with an untagged NO, and STATUS on the selected folder keeps
reporting the old UIDVALIDITY from that connection's stale view.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maildesk.intake.imap import parse_mailboxes
from maildesk.intake.imap.session import ImapSession, ImapUnavailable
from tests.intake.conftest_imap import dovecot_fixture
from tests.intake.dovecot import Dovecot
from tests.mailkit import make_mail

__all__ = ["dovecot_fixture"]


@pytest.fixture
def session(dovecot: Dovecot) -> Iterator[ImapSession]:
    dovecot.append([make_mail(subject="before")], folder="Support")
    (mailbox,) = parse_mailboxes(dovecot.url(folder="Support"))
    imap = ImapSession.connect(mailbox)
    yield imap
    imap.close()


def recreate(dovecot: Dovecot) -> None:
    with dovecot.client() as other:
        other.delete_folder("Support")
        other.create_folder("Support")
        other.multiappend("Support", [make_mail(subject=f"after {i}") for i in range(3)])


def test_uidvalidity_sees_a_folder_recreated_by_another_client(
    dovecot: Dovecot, session: ImapSession
) -> None:
    before = session.select("Support").uidvalidity
    recreate(dovecot)
    assert session.uidvalidity("Support") != before
    assert session.search_all() == [1, 2, 3]


def test_idle_on_a_recreated_folder_is_a_connection_problem(
    dovecot: Dovecot, session: ImapSession
) -> None:
    session.select("Support")
    session.idle_start()
    recreate(dovecot)
    with pytest.raises(ImapUnavailable, match="IDLE failed"):
        for _ in range(10):  # Dovecot answers within its 1 s idle check interval
            session.idle_wait(1.0)
