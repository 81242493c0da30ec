"""One logged-in IMAP connection (imapclient), blocking, used from one thread.

Every imapclient/imaplib/socket/TLS error is translated here, at the
boundary, into the three errors the poller responds to:
`ImapAuthFailed` (wait long, tell the operator once), `ImapRefused` (a setup
problem such as no STARTTLS offered; wait long) and `ImapUnavailable`
(network, server restart, a command failing: reconnect with backoff).
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from maildesk.errors import PermanentError, TransientError
from maildesk.intake.imap.url import Mailbox, Security

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
SEEN = b"\\Seen"
UIDS_PER_COMMAND = 1000  # keeps command lines well below servers' limits (Dovecot: 64 KiB)

T = TypeVar("T")


class ImapUnavailable(TransientError):
    """Network loss, server restart, a failed command: reconnect with backoff."""


class ImapAuthFailed(PermanentError):
    """The server refused the user name or password."""


class ImapRefused(PermanentError):
    """We refuse to go on (no TLS on a remote server, a bad certificate)."""


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    uidnext: int
    exists: int


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP UID set: [1, 2, 3, 7, 9, 10] -> '1:3,7,9:10'."""
    out: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(out)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text


class ImapSession:
    """A selected folder on a logged-in connection. Not thread-safe: one thread only."""

    def __init__(self, client: IMAPClient, mailbox: Mailbox, security: Security) -> None:
        self._client = client
        self.mailbox = mailbox
        self.security = security
        caps = {c.upper() for c in client.capabilities()}
        self.can_idle = b"IDLE" in caps
        self.can_move = b"MOVE" in caps
        self.can_uid_expunge = b"UIDPLUS" in caps
        self.capabilities = sorted(c.decode("ascii", "replace") for c in caps)
        self._idling = False
        self._idle_since = 0.0

    # -- connecting ---------------------------------------------------------

    @classmethod
    def connect(cls, mailbox: Mailbox, timeout: float = CONNECT_TIMEOUT) -> ImapSession:
        password = mailbox.read_password()
        wanted = mailbox.security_wanted()
        context = ssl.create_default_context()
        where = f"{mailbox.host}:{mailbox.port}"
        try:
            client = IMAPClient(
                mailbox.host,
                port=mailbox.port,
                ssl=wanted is Security.TLS,
                ssl_context=context if wanted is Security.TLS else None,
                timeout=SocketTimeout(connect=timeout, read=READ_TIMEOUT),
            )
        except ssl.SSLCertVerificationError as exc:
            raise ImapRefused(
                f"TLS certificate of {where} not trusted: {exc.verify_message}"
            ) from None
        except (OSError, IMAPClientError, imaplib.IMAP4.error) as exc:
            raise ImapUnavailable(f"cannot connect to {where}: {_describe(exc)}") from None
        try:
            security = wanted
            if wanted is Security.STARTTLS:
                if client.has_capability("STARTTLS"):
                    client.starttls(context)
                elif mailbox.loopback:
                    security = Security.PLAIN
                else:
                    raise ImapRefused(
                        f"{where} does not offer STARTTLS; refusing to send the password "
                        "in clear text (use imaps:// or a server on loopback)"
                    )
            try:
                client.login(mailbox.username, password)
            except LoginError as exc:
                raise ImapAuthFailed(
                    f"login as {mailbox.username} refused by {where}: {_describe(exc)}"
                ) from None
            return cls(client, mailbox, security)
        except BaseException as exc:
            _quietly(client.shutdown)
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise ImapRefused(
                    f"TLS certificate of {where} not trusted: {exc.verify_message}"
                ) from None
            if isinstance(exc, OSError | IMAPClientError | imaplib.IMAP4.error):
                raise ImapUnavailable(f"{where}: {_describe(exc)}") from None
            raise

    def close(self) -> None:
        """Log out politely if the connection is still healthy; never raises."""
        if self._idling:
            _quietly(self._client.idle_done)
            self._idling = False
        try:
            self._client.socket().settimeout(5)
            self._client.logout()
        except Exception:
            _quietly(self._client.shutdown)

    def abort(self) -> None:
        """Unblock a pending read from another thread (used on shutdown)."""
        _quietly(lambda: self._client.socket().shutdown(socket.SHUT_RDWR))

    # -- commands -----------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (OSError, IMAPClientError, imaplib.IMAP4.error) as exc:
            raise ImapUnavailable(f"{what}: {_describe(exc)}") from None

    def ensure_folder(self, name: str) -> bool:
        """Create `name` when missing; True when it was created."""
        if self._call(f"LIST {name}", self._client.folder_exists, name):
            return False
        try:
            self._client.create_folder(name)
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            # Another instance may have created it in the meantime.
            if not self._call(f"LIST {name}", self._client.folder_exists, name):
                raise ImapUnavailable(f"CREATE {name}: {_describe(exc)}") from None
        log.info("imap %s: created folder %s", self.mailbox.label, name)
        return True

    def folder_exists(self, name: str) -> bool:
        return self._call(f"LIST {name}", lambda: bool(self._client.folder_exists(name)))

    def select(self, folder: str, readonly: bool = False) -> FolderInfo:
        info = self._call(
            f"{'EXAMINE' if readonly else 'SELECT'} {folder}",
            lambda: self._client.select_folder(folder, readonly=readonly),
        )
        return FolderInfo(
            uidvalidity=int(info.get(b"UIDVALIDITY", 0)),
            uidnext=int(info.get(b"UIDNEXT", 0)),
            exists=int(info.get(b"EXISTS", 0)),
        )

    def count(self, folder: str) -> int:
        status = self._call(
            f"STATUS {folder}", lambda: self._client.folder_status(folder, [b"MESSAGES"])
        )
        return int(status.get(b"MESSAGES", 0))

    def uidvalidity(self, folder: str) -> int:
        """The folder's UIDVALIDITY now, from a fresh SELECT: a recreated folder has a new one.

        Not STATUS: on the folder a connection has selected, Dovecot answers
        STATUS from that connection's view, which keeps the old UIDVALIDITY
        after another client deleted and recreated the folder.
        """
        return self.select(folder).uidvalidity

    def search_all(self) -> list[int]:
        """Every message in the selected folder not already marked for deletion."""
        return sorted(self._call("UID SEARCH", lambda: self._client.search(["NOT", "DELETED"])))

    def search_after(self, last_uid: int) -> list[int]:
        """Messages with a UID above `last_uid` (`N:*` always matches the last one)."""
        found = self._call(
            "UID SEARCH",
            lambda: self._client.search(["UID", f"{last_uid + 1}:*", "NOT", "DELETED"]),
        )
        return sorted(u for u in found if u > last_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each message still present (gone ones are left out)."""
        out: dict[int, int] = {}
        for part in chunks(sorted(uids), UIDS_PER_COMMAND):
            found = self._call(
                "UID FETCH RFC822.SIZE",
                self._client.fetch,
                list(part),  # a list: imapclient filters the response by these UIDs
                [b"RFC822.SIZE"],
            )
            for uid, data in found.items():
                out[int(uid)] = int(data.get(b"RFC822.SIZE", 0))
        return out

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes | None]:
        """The raw bytes of each message, without setting \\Seen. None: no body returned."""
        found = self._call(
            "UID FETCH BODY.PEEK[]", self._client.fetch, list(uids), [b"BODY.PEEK[]"]
        )
        out: dict[int, bytes | None] = {}
        for uid, data in found.items():
            body = data.get(b"BODY[]")
            out[int(uid)] = bytes(body) if isinstance(body, bytes | bytearray) else None
        return out

    def move(self, uids: Sequence[int], folder: str, seen: bool) -> None:
        """Flag (optionally \\Seen) and move; MOVE where offered, else COPY + EXPUNGE."""
        if not uids:
            return
        for part in chunks(sorted(uids), UIDS_PER_COMMAND):
            ids = uid_set(part)
            if seen:
                self._call("UID STORE +FLAGS \\Seen", self._client.add_flags, ids, [SEEN], True)
            if self.can_move:
                self._call(f"UID MOVE {folder}", self._client.move, ids, folder)
                continue
            self._call(f"UID COPY {folder}", self._client.copy, ids, folder)
            self._call("UID STORE +FLAGS \\Deleted", self._client.delete_messages, ids, True)
            if self.can_uid_expunge:
                self._call("UID EXPUNGE", self._client.uid_expunge, ids)
            else:
                self._call("EXPUNGE", self._client.expunge)

    # -- IDLE ---------------------------------------------------------------

    def idle_start(self) -> None:
        self._call("IDLE", self._client.idle)
        self._idling = True
        self._idle_since = time.monotonic()

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s in IDLE; True when the server announced new mail."""
        started = time.monotonic()
        responses: list[Any] = self._call("IDLE", lambda: self._client.idle_check(timeout))
        for resp in responses:
            if len(resp) >= 1 and resp[0] in (b"BYE", b"NO"):
                # BYE: the server is going away. NO: the server can no longer serve
                # the selected folder (Dovecot says "Internal error" when another
                # client deleted and recreated it). Either way this connection's
                # view is stale: reconnect and select afresh.
                words = [p for p in resp[1:] if isinstance(p, bytes)]
                why = b" ".join(words).decode(errors="replace")
                what = "server closed the connection" if resp[0] == b"BYE" else "IDLE failed"
                raise ImapUnavailable(f"{what}: {why or resp[0].decode()}")
            if len(resp) >= 2 and resp[1] in (b"EXISTS", b"RECENT"):
                return True
        # Readable yet nothing read: the peer probably closed the socket. Ending
        # IDLE tells for sure (DONE fails on a dead connection); then look again.
        return not responses and time.monotonic() - started < timeout / 2

    def idle_done(self) -> bool:
        """Leave IDLE; True when new mail was announced meanwhile."""
        self._idling = False
        _text, responses = self._call("IDLE DONE", self._client.idle_done)
        return any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    @property
    def idle_seconds(self) -> float:
        return time.monotonic() - self._idle_since if self._idling else 0.0


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:
        log.debug("ignored while closing: %s", exc)
