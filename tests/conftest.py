"""Shared fixtures: databases (SQLite and the PostgreSQL on 127.0.0.1:5432),
a real `maildesk run` subprocess, a real SMTP relay sink, and the corpora."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from maildesk.storage.db import make_engine, upgrade

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
PG_ADMIN_URL = os.environ.get(
    "MAILDESK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = bool(os.environ.get("CI"))


def require_or_skip(ok: bool, reason: str) -> None:
    """Outside CI a missing dependency skips with a reason; in CI it fails."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpora() -> Path:
    require_or_skip(CORPORA.is_dir(), f"corpora not found at {CORPORA}")
    return CORPORA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


async def eventually(
    check: Callable[[], object], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """`wait_for` inside a running event loop: `check()` (sync, may block briefly) runs
    in a thread, so the loop's own tasks go on meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await asyncio.to_thread(check):
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def _pg_admin() -> Engine | None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:
        engine.dispose()
        return None
    return engine


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = _pg_admin()
    require_or_skip(engine is not None, f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    assert engine is not None
    yield engine
    engine.dispose()


def new_database_url(backend: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database (dropped after)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'maildesk.db'}"
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"maildesk_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    request.addfinalizer(drop)
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return new_database_url(backend, tmp_path, request)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of the backend, for tests below the daemon."""
    from maildesk.storage.db import make_engine, upgrade

    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def base_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDESK_")}
    env.update(
        MAILDESK_DATA_DIR=str(data_dir),
        MAILDESK_DATABASE_URL=database_url,
        MAILDESK_RULES=str(REPO / "rules.yaml"),
        MAILDESK_SLA=str(REPO / "sla.yaml"),
        MAILDESK_TEMPLATES=str(REPO / "templates"),
        MAILDESK_SECRET="test-secret",
        MAILDESK_OUTBOX_BACKOFF_SECONDS="0.2",
        MAILDESK_OUTBOX_BACKOFF_MAX_SECONDS="1",
    )
    env.update(extra)
    return env


def maildesk_cli(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maildesk", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def upgrade_database(env: dict[str, str]) -> None:
    """What `maildesk db upgrade` does, in this process (saves a CLI start per test;
    the CLI itself is tested where it matters)."""
    engine = make_engine(env["MAILDESK_DATABASE_URL"])
    try:
        upgrade(engine)
    finally:
        engine.dispose()


class Daemon:
    """`maildesk run` as a real subprocess, the way a user starts it."""

    def __init__(self, env: dict[str, str], port: int, log: Path, module: str = "maildesk") -> None:
        self.module = module  # tests.faultydaemon: the same daemon with test faults wired in
        self.env = env
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.engine = make_engine(env["MAILDESK_DATABASE_URL"])

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run"],
            env=self.env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def processed(self, mails: int) -> bool:
        """All `mails` inbound mails are stored and none is waiting for the pipeline. One
        query, so one snapshot: two (none new? then four in all?) can see no rows at
        first and four new ones next, all stored by one replay in between."""
        row = self.query(
            "select count(*), coalesce(sum(case when status = 'new' then 1 else 0 end), 0)"
            " from inbound"
        )[0]
        return bool(row[0] == mails and row[1] == 0)


@pytest.fixture
def start_daemon(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Daemon]]:
    """Upgrade a fresh database and start `maildesk run`; extra env via keyword arguments."""
    started: list[Daemon] = []

    def start(module: str = "maildesk", **extra: str) -> Daemon:
        port = free_port()
        data = tmp_path / "data"
        env = base_env(
            data,
            database_url,
            MAILDESK_SMTP_LISTEN=f"127.0.0.1:{port}",
            MAILDESK_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
            **extra,
        )
        upgrade_database(env)
        daemon = Daemon(env, port, tmp_path / "daemon.log", module)
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
        daemon.engine.dispose()


class RelaySink:
    """A real SMTP relay on loopback (aiosmtpd) that records what it receives."""

    def __init__(
        self,
        port: int,
        refuse_with: str | None = None,
        smtputf8: bool = False,
        mails_per_connection: int | None = None,
        refuse_rcpt: str | None = None,
    ) -> None:
        """`mails_per_connection`: after that many, 421 and the connection is closed
        (as providers that limit mails per connection do); `refuse_rcpt`: an address
        refused with 550 at RCPT."""
        from aiosmtpd.controller import Controller

        self.port = port
        self.received: list[tuple[str, list[str], bytes]] = []
        self.mail_options: list[list[str]] = []  # of each received mail, in order
        self.connections = 0  # sessions greeted with EHLO/HELO
        sink = self

        class Handler:
            async def handle_EHLO(
                self, server: Any, session: Any, envelope: Any, hostname: str,
                responses: list[str],
            ) -> list[str]:
                session.host_name = hostname
                sink.connections += 1
                return responses

            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str,
                rcpt_options: list[str],
            ) -> str:
                if address == refuse_rcpt:
                    return "550 5.1.1 No such user here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if refuse_with:
                    return refuse_with
                taken = getattr(session, "mails_taken", 0)
                if mails_per_connection is not None and taken >= mails_per_connection:
                    asyncio.get_running_loop().call_soon(server.transport.close)
                    return "421 4.7.0 Too many mails on this connection, closing"
                session.mails_taken = taken + 1
                sink.received.append(
                    (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
                )
                sink.mail_options.append(list(envelope.mail_options))
                return "250 OK"

        self._controller = Controller(
            Handler(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def relay() -> Iterator[Callable[..., RelaySink]]:
    sinks: list[RelaySink] = []

    def make(port: int | None = None, **options: Any) -> RelaySink:
        """A sink on `port` (a free one by default); `options` as RelaySink takes them."""
        sink = RelaySink(port or free_port(), **options)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        with contextlib.suppress(AssertionError, AttributeError, RuntimeError):
            sink.stop()
