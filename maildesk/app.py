"""`maildesk run`: the composition root. `build` wires the configuration, the engine
and the workers; `run_daemon` starts them, serves, and stops them in order.

Start-up: lock the data directory (SQLite), load and validate the config, check
the schema, start the workers, open the SMTP port, then tell systemd READY=1.
Stop (SIGTERM/SIGINT): new SMTP sessions get 421, transactions in flight
finish, the pipeline finishes what got its 250, the outbox gets one last flush,
exit 0 within STOP_SECONDS. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Engine, text

from maildesk import gcpolicy
from maildesk.config.datadir import DataDirLock, make_database_private, make_private
from maildesk.config.settings import Settings, split_host_port
from maildesk.core.replytoken import bounce_address
from maildesk.intake.imap import Poller, PollerHooks, make_pollers
from maildesk.intake.process import IntakeProcess
from maildesk.intake.spool import Spool, spool_dir
from maildesk.lifecycle import STOP_SIGNALS, SignalLatch
from maildesk.metrics import Metrics
from maildesk.spam.live import LiveSpamFilter
from maildesk.spam.model import SpamThresholds
from maildesk.storage.db import is_postgres, make_engine, require_current_schema
from maildesk.work.health import StatusServer, backlog_counts
from maildesk.work.outbox import OutboxSender, release_claims
from maildesk.work.parsepool import ParserPool
from maildesk.work.processor import Processor
from maildesk.work.reload import ConfigReloader, LiveConfig
from maildesk.work.scheduler import Scheduler, ticket_jobs
from maildesk.work.sdnotify import Notifier
from maildesk.work.spamlearn import SureLearner
from maildesk.work.transports import transport_from_url
from maildesk.worker import Worker

log = logging.getLogger("maildesk")

STOP_SECONDS = 9.0  # SIGTERM to exit, all included (the unit allows more)
SMTP_DRAIN_SECONDS = 5.0  # of which: transactions in flight may finish
STATUS_SECONDS = 10.0  # systemd's STATUS= line


@dataclass
class Daemon:
    """Every part of one running daemon, wired but not started."""

    settings: Settings
    engine: Engine
    live: LiveConfig
    metrics: Metrics
    notifier: Notifier
    parser: ParserPool
    spool: Spool
    intake: IntakeProcess
    processor: Processor
    sender: OutboxSender
    learner: SureLearner | None
    pollers: list[Poller]
    reloader: ConfigReloader
    scheduler: Scheduler
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def workers(self) -> list[Worker]:
        """In the order they start; they stop in the reverse order."""
        learner: list[Worker] = [self.learner] if self.learner else []
        return [self.processor, self.sender, *learner, self.reloader, self.scheduler,
                *self.pollers]

    def health(self) -> dict[str, Any]:
        """What /healthz shows besides the database: SMTP and the spool, each worker, each
        poller."""
        return {
            "smtp": self.intake.health(),
            "spool": {"bytes_not_in_database": self.spool.backlog_bytes()},
            "workers": {w.name: w.health() for w in self.workers if w not in self.pollers},
            "imap": [p.health() for p in self.pollers],
        }


def build(settings: Settings, poller_hooks: PollerHooks | None = None) -> Daemon:
    """The composition root: everything `maildesk run` runs, wired from the settings.
    A ConfigError (with file:line) refuses the start."""
    live = LiveConfig.start(settings)
    for note in (*live.runtime.notes, settings.outbound_warning()):
        if note:
            log.warning("%s", note)
    engine = make_engine(settings.effective_database_url)
    require_current_schema(engine)
    make_database_private(settings.effective_database_url)
    metrics = Metrics()
    sender = OutboxSender(
        engine,
        transport_from_url(settings.effective_outbound),
        max_attempts=settings.outbox_max_attempts,
        backoff=settings.outbox_backoff_seconds,
        backoff_max=settings.outbox_backoff_max_seconds,
        metrics=metrics,
        return_path=partial(bounce_address, settings.primary_address, key=settings.hmac_key()),
    )
    spam = LiveSpamFilter(
        settings.spam_model_path, SpamThresholds(settings.spam_ham_below, settings.spam_spam_above)
    )
    learner = None
    if settings.spam_learn == "sure":
        learner = SureLearner(engine, spam, seconds=settings.spam_learn_seconds)
    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    processor = Processor(engine, live.current, parser, on_committed=sender.wake,
                          spam_filter=spam.current, metrics=metrics, learner=learner)
    spool = Spool(engine, processor.wake, spool_dir(settings.data_dir), metrics)
    pollers = []
    if settings.imap_url:
        pollers = make_pollers(settings, engine, spool, poller_hooks or PollerHooks())
    scheduler = Scheduler()
    scheduler.every(settings.sla_scan_seconds, "ticket-jobs", ticket_jobs(engine, live.current))
    intake = IntakeProcess(settings, spool, SMTP_DRAIN_SECONDS)  # SMTP, in its own process
    return Daemon(settings, engine, live, metrics, Notifier(), parser, spool, intake, processor,
                  sender, learner, pollers, ConfigReloader(live, spam, engine), scheduler)


async def run_daemon(
    settings: Settings,
    ready: Callable[[int], None] | None = None,
    latch: SignalLatch | None = None,
    poller_hooks: PollerHooks | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    parsers: list[ParserPool] = []

    def on_signal(signum: int) -> None:
        if stop.is_set():  # the second one: the operator means it
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            for parser in parsers:
                parser.close(wait=False)
            logging.shutdown()
            os._exit(128 + signum)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    for signum in latch.received if latch else ():
        on_signal(signum)  # arrived before the loop ran: not lost

    make_private(settings.data_dir)
    lock = DataDirLock(settings.data_dir)
    if settings.effective_database_url.startswith("sqlite"):
        lock.acquire()  # before anything else touches the data directory
    try:
        daemon = build(settings, poller_hooks)
        daemon.stop = stop
        parsers.append(daemon.parser)
        await serve(daemon, ready)
    finally:
        lock.release()
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def serve(daemon: Daemon, ready: Callable[[int], None] | None = None) -> None:
    """Start every part, serve until `daemon.stop` is set, then stop them in order."""
    d, settings = daemon, daemon.settings
    loop = asyncio.get_running_loop()
    if not is_postgres(d.engine):  # the data directory lock says: nobody else holds claims
        release_claims(d.engine)
    if d.learner is not None:
        recovered = await asyncio.to_thread(d.learner.recover)
        if recovered:
            log.info("spam learning: %d sure verdicts left from the last run to learn", recovered)
    d.spool.start()  # replays what an earlier run left
    tasks: list[asyncio.Task[None]] = []
    status: StatusServer | None = None
    serving = False  # past start-up: there may be accepted mail to finish at stop
    try:
        port = await d.intake.start()  # a bad MAILDESK_SMTP_LISTEN: ConfigError
        host = split_host_port(settings.smtp_listen)[0]
        status = await _status_server(d)
        if d.notifier.enabled:
            d.scheduler.every(STATUS_SECONDS, "sd-status", partial(_report_status, d))
        loop.add_signal_handler(signal.SIGHUP, d.reloader.wake)
        await d.processor.warm_up()
        gcpolicy.settle()  # what start-up loaded stays for the daemon's lifetime
        for worker in d.workers:
            worker.start()
        if d.notifier.watchdog_seconds:
            tasks.append(loop.create_task(_watchdog(d.notifier), name="watchdog"))
        await asyncio.to_thread(_ping_database, d.engine)  # reachable right now
        log.info("maildesk listening for SMTP on %s:%d for %s; outbound: %s", host, port,
                 ", ".join(settings.support_addresses), settings.effective_outbound)
        if not d.stop.is_set():
            d.notifier.send(ready=1, status=f"SMTP on {host}:{port}; no mail yet")
            if ready:
                ready(port)
        serving = True
        await d.stop.wait()
    finally:
        await _shut_down(d, status, tasks, serving)


async def _shut_down(
    d: Daemon, status: StatusServer | None, tasks: list[asyncio.Task[None]], serving: bool
) -> None:
    """Intake first (no new mail), then the workers in reverse order; the mail that got
    its 250 is processed and its mails flushed while time allows (else it waits,
    durably spooled, for the next start)."""
    d.notifier.send(stopping=1, status="stopping")
    deadline = time.monotonic() + STOP_SECONDS
    log.info("maildesk stopping")
    await d.intake.stop()  # new sessions get 421, transactions in flight finish
    if status is not None:
        await status.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for worker in reversed(d.workers):
        if worker is not d.processor:
            await worker.stop()
    await d.spool.stop()  # what got its 250 is in the database now
    if serving:
        with contextlib.suppress(TimeoutError):
            budget = max(0.5, deadline - time.monotonic() - 2)
            await asyncio.wait_for(d.processor.drain(), budget)
    await d.processor.stop()  # a batch being committed finishes
    if d.learner is not None:  # what is left stays queued for the next start if this fails
        try:
            await asyncio.to_thread(d.learner.flush)
        except Exception:
            log.exception("spam learning: last batch not learned; it is at the next start")
    if serving:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(d.sender.flush(), max(0.5, deadline - time.monotonic()))
    d.parser.close()
    d.engine.dispose()
    log.info("maildesk stopped")


async def _status_server(d: Daemon) -> StatusServer | None:
    """/metrics and /healthz; the mail keeps flowing when the port is taken."""
    status = StatusServer(d.engine, d.metrics, d.health)
    host, port = split_host_port(d.settings.metrics_listen)
    try:
        await status.start(host, port)
    except OSError as exc:
        log.error("MAILDESK_METRICS_LISTEN=%s: %s; /metrics and /healthz are off",
                  d.settings.metrics_listen, exc.strerror)
        return None
    return status


def _ping_database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 at half the period while the event loop runs. A database outage does
    not stop the pings (a restart would not cure it); a hung loop does."""
    assert notifier.watchdog_seconds
    while True:
        notifier.send(watchdog=1)
        await asyncio.sleep(notifier.watchdog_seconds / 2)


async def _report_status(d: Daemon) -> None:
    totals = d.metrics.totals()
    try:
        backlog = await asyncio.to_thread(backlog_counts, d.engine)
        waiting = f"waiting: {backlog['inbound_new']} in, {backlog['outbox_queued']} out"
    except Exception:
        waiting = "database unreachable"
    d.notifier.send(status=(
        f"{'stopping; ' if d.stop.is_set() else ''}{totals['accepted']} mails accepted, "
        f"{totals['processed']} processed, {totals['sent']} sent; {waiting}"
    ))
