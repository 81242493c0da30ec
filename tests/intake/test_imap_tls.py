"""imaps:// (TLS) and imap:// (STARTTLS) against Dovecot with a self-signed certificate."""

from __future__ import annotations

import pytest

from maildesk.intake.imap import parse_mailboxes
from maildesk.intake.imap.session import ImapRefused, ImapSession
from maildesk.intake.imap.url import Security
from tests.intake.conftest_imap import dovecot_fixture
from tests.intake.dovecot import Dovecot

__all__ = ["dovecot_fixture"]


def test_tls_and_starttls_verify_the_certificate(
    dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = dovecot.enable_tls()
    (imaps,) = parse_mailboxes(dovecot.url(scheme="imaps"))
    (starttls,) = parse_mailboxes(dovecot.url())

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test CA
    for mailbox, security in ((imaps, Security.TLS), (starttls, Security.STARTTLS)):
        session = ImapSession.connect(mailbox)
        try:
            assert session.security is security
            assert session.select("INBOX").uidvalidity > 0
        finally:
            session.close()

    monkeypatch.delenv("SSL_CERT_FILE")  # an untrusted certificate is refused, clearly
    for mailbox in (imaps, starttls):
        with pytest.raises(ImapRefused, match=r"TLS certificate of 127\.0\.0\.1:\d+ not trusted"):
            ImapSession.connect(mailbox)
