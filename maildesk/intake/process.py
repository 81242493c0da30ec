"""The SMTP intake in a process of its own, so that the 250 path never waits for the
pipeline: neither for its database lock nor for its share of the GIL.

The daemon binds the port (a bad MAILDESK_SMTP_LISTEN stops the start, as before) and
starts ``python -m maildesk.intake.process CONFIG``, which inherits the listening socket
and a pipe. The child runs the aiosmtpd listener and a spool writer: it answers 250 once
a mail is fdatasync'ed in its spool segment, and reports each durable end on the pipe
("<segment> <bytes>"); the daemon's Spool replays from there. The child dies with the
daemon (PR_SET_PDEATHSIG, and a check of its parent); if it dies alone, the daemon
replays what it left and starts another. SIGTERM: new sessions get 421, transactions
in flight finish (up to a drain time), then it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maildesk.errors import ConfigError

if TYPE_CHECKING:  # the child imports this module: it loads no database or settings code
    from maildesk.config.settings import Settings
    from maildesk.intake.spool import Spool

log = logging.getLogger("maildesk.intake")

START_SECONDS = 30.0  # for the child to say it listens
# The rest of the daemon yields the CPU to the intake (Linux: per thread). As far as
# it goes: a service's processes share the CPU with other services by cgroup (or
# autogroup), so this only orders maildesk's own work; the pipeline still gets what
# the intake leaves, all of it once a burst is answered. (5 left PostgreSQL's intake
# at about 31% of a no-op server under a burst; 19 gives about 40%.)
PIPELINE_NICE = 19
RESTART_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # pauses between restarts after a crash


class IntakeProcess:
    """The daemon's side: the listening socket, the child, its reports to the spool."""

    def __init__(self, settings: Settings, spool: Spool, drain_seconds: float) -> None:
        self._settings = settings
        self._spool = spool
        self._drain = drain_seconds
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._instance = ""
        self._reports: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.address = ""

    async def start(self) -> int:
        """Bind, start the child, wait until it listens; returns the bound port."""
        from maildesk.config.settings import split_host_port


        host, port = split_host_port(self._settings.smtp_listen)
        try:
            self._sock = socket.create_server((host, port), backlog=100)
        except OSError as exc:
            raise ConfigError(
                f"MAILDESK_SMTP_LISTEN={self._settings.smtp_listen}: {exc.strerror}"
            ) from None
        bound = int(self._sock.getsockname()[1])
        self.address = f"{host}:{bound}"
        await self._spawn()
        _yield_cpu_to_intake()
        self._watch = asyncio.get_running_loop().create_task(self._watch_child(), name="intake")
        return bound

    async def stop(self) -> None:
        """421 for new sessions, transactions in flight finish, the child exits; what it
        made durable is then the spool's to replay."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._drain + 2.0)
            except TimeoutError:
                log.error("smtp: the intake process did not stop in time; killing it")
                proc.kill()
                await proc.wait()
        await self._gone()
        if self._sock is not None:
            self._sock.close()

    def health(self) -> str:
        alive = self._proc is not None and self._proc.returncode is None
        return f"listening on {self.address}" if alive else "intake process restarting"

    async def _spawn(self) -> None:
        assert self._sock is not None
        read_fd, write_fd = os.pipe()
        config = {
            "listen_fd": self._sock.fileno(),
            "report_fd": write_fd,
            "parent": os.getpid(),
            "spool": str(self._spool.directory),
            "addresses": list(self._settings.accepted_addresses),
            "max_bytes": self._settings.max_message_bytes,
            "hostname": self._settings.hostname,
            "log_level": self._settings.log_level.upper(),
            "drain_seconds": self._drain,
        }
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "maildesk.intake.process",
                json.dumps(config),
                stdin=subprocess.DEVNULL,
                pass_fds=(self._sock.fileno(), write_fd),
            )
        finally:
            os.close(write_fd)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            first = await asyncio.wait_for(reader.readline(), START_SECONDS)
        except TimeoutError:
            first = b""
        if not first.startswith(b"ready "):
            self._proc.kill()
            raise ConfigError("the SMTP intake process did not start (see the log above)")
        self._instance = first.split()[1].decode()
        self._reports = loop.create_task(self._follow(reader), name="intake-reports")

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            name, _, end = line.decode().partition(" ")
            self._spool.follow(name, int(end))

    async def _gone(self) -> None:
        """The child exited: read its last reports, then let the spool take its files."""
        if self._reports is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reports), 2.0)
            self._reports.cancel()
            self._reports = None
        if self._instance:
            self._spool.release(self._instance)

    async def _watch_child(self) -> None:
        crashes = 0
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            await self._gone()
            pause = RESTART_SECONDS[min(crashes, len(RESTART_SECONDS) - 1)]
            log.error(
                "smtp: the intake process exited with %s; starting another in %.1f s", code, pause
            )
            crashes += 1
            await asyncio.sleep(pause)
            try:
                await self._spawn()
            except Exception as exc:  # keep trying: the port stays bound meanwhile
                log.error("smtp: could not start the intake process: %s", exc)


def _yield_cpu_to_intake() -> None:
    """The rest of the daemon (the pipeline, its parse workers, the outbox) runs at a
    lower CPU priority than the intake, so that a burst of mail is answered first and
    processed right after. Linux keeps a nice value per thread: every thread running
    now (an executor's, a library's) is lowered too, and those started later inherit it."""
    lowered = os.getpriority(os.PRIO_PROCESS, 0) + PIPELINE_NICE
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process
        threads = [0]
    for tid in threads:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, max(lowered, os.getpriority(os.PRIO_PROCESS, tid)))


# -- the child ----------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took hold
        os._exit(1)


async def _serve(config: dict[str, Any]) -> None:
    from maildesk.intake.smtp import IntakeHandler, SmtpSessions
    from maildesk.intake.spool_writer import SpoolWriter

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    report = os.fdopen(config["report_fd"], "wb", buffering=0)

    def durable(segment: Any) -> None:
        report.write(f"{segment.path.name} {segment.end}\n".encode())

    writer = SpoolWriter(Path(config["spool"]), durable)
    writer.start()
    handler = IntakeHandler(writer, tuple(config["addresses"]))
    sessions = SmtpSessions(handler, config["max_bytes"], config["hostname"])
    sock = socket.socket(fileno=config["listen_fd"])
    server = await loop.create_server(sessions, sock=sock)
    report.write(f"ready {writer.instance}\n".encode())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if os.getppid() != config["parent"]:
            log.error("smtp intake: the daemon is gone; exiting")
            os._exit(1)
    cut = await sessions.drain(config["drain_seconds"])
    if cut:
        log.warning("smtp: %d transaction(s) cut off at shutdown (clients retry)", cut)
    server.close()
    await writer.stop()
    report.close()


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    logging.basicConfig(
        level=config["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    _die_with_parent(config["parent"])
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
