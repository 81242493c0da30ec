"""A throwaway Dovecot IMAP server for tests (recipe in tests/intake/dovecot/).

Everything lives in a short directory directly under /tmp (as root, Dovecot's
mail processes run as `nobody`, which cannot enter pytest's 0700 tmp_path).
Plain IMAP on 127.0.0.1, users alice:secret and bob:secret.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

RECIPE = Path(__file__).resolve().parent / "dovecot"
USERS = {"alice": "secret", "bob": "secret"}


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None


@dataclass
class Dovecot:
    dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    tls_port: int = 0

    def start(self) -> None:
        """Start (or restart on the same port); returns once the port accepts connections."""
        # stderr to a file, not a pipe: the daemonized server keeps it open.
        errors = self.dir.parent / f"{self.dir.name}.start.err"
        with open(errors, "w+b") as err:
            out = subprocess.run(
                [str(RECIPE / "start-dovecot.sh"), str(self.dir), str(self.port)],
                stdout=subprocess.PIPE, stderr=err, timeout=60, check=False,
            )
            err.seek(0)
            problem = err.read().decode(errors="replace").strip()
        errors.unlink()
        if out.returncode != 0:
            raise RuntimeError(f"dovecot did not start: {problem}")
        self.port = int(out.stdout.decode().strip())

    def stop(self) -> None:
        script = str(RECIPE / "stop-dovecot.sh")
        subprocess.run([script, str(self.dir), "0"], check=False, timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def enable_tls(self) -> Path:
        """Restart with TLS: a self-signed certificate for 127.0.0.1, STARTTLS on the
        plain port and an imaps port (`tls_port`). Returns the certificate (to trust)."""
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.tls_port = int(sock.getsockname()[1])
        self.reconfigure(
            f"ssl = required\nssl_cert = <{cert}\nssl_key = <{key}\n"
            f"service imap-login {{\n  inet_listener imaps {{\n"
            f"    address = 127.0.0.1\n    port = {self.tls_port}\n  }}\n}}\n",
            wait_port=self.tls_port,
        )
        return cert

    def reconfigure(self, extra: str, wait_port: int | None = None) -> None:
        """Restart with `extra` appended to the generated dovecot.conf (later settings win)."""
        conf = self.dir / "dovecot.conf"
        self.stop()
        conf.write_text(conf.read_text() + "\n" + extra)
        subprocess.run([dovecot_binary() or "dovecot", "-c", str(conf)], check=True, timeout=30)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", wait_port or self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not come back: {(self.dir / 'dovecot.log').read_text()}")

    def url(
        self,
        user: str = "alice",
        folder: str = "INBOX",
        password: str | None = None,
        scheme: str = "imap",
    ) -> str:
        secret = self.users[user] if password is None else password
        port = self.tls_port if scheme == "imaps" else self.port
        return f"{scheme}://{user}:{secret}@{self.host}:{port}/{folder}"

    def client(self, user: str = "alice") -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(user, self.users[user])
        return client

    def append(
        self, raws: Iterable[bytes], folder: str = "INBOX", user: str = "alice", chunk: int = 200
    ) -> None:
        """APPEND mails (MULTIAPPEND in chunks: one round trip per chunk)."""
        items = list(raws)
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            if not client.has_capability("MULTIAPPEND"):
                for raw in items:
                    client.append(folder, raw)
                return
            for start in range(0, len(items), chunk):
                client.multiappend(folder, items[start : start + chunk])

    def count(self, folder: str = "INBOX", user: str = "alice") -> int:
        with self.client(user) as client:
            if not client.folder_exists(folder):
                return 0
            return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])

    def counts(self, folders: Sequence[str], user: str = "alice") -> dict[str, int]:
        return {f: self.count(f, user) for f in folders}

    def flags(self, folder: str, user: str = "alice") -> list[tuple[bytes, ...]]:
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            found = client.fetch(client.search("ALL"), ["FLAGS"])
            return [tuple(v[b"FLAGS"]) for v in found.values()]


def start_dovecot() -> Dovecot:
    server = Dovecot(Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp")))
    try:
        server.start()
    except BaseException:
        shutil.rmtree(server.dir, ignore_errors=True)
        raise
    return server
