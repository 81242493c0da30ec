"""`maildesk run`: wire the pieces onto one asyncio loop and keep them running.

Start-up: lock the data directory (SQLite), load and validate the config, check
the schema, start the pipeline and the scheduler, open the SMTP port, then tell
systemd READY=1. Stop (SIGTERM/SIGINT): new SMTP sessions get 421, transactions
in flight finish, the pipeline finishes its batch, the outbox gets one last
flush, exit 0 within STOP_SECONDS. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from maildesk.datadir import DataDirLock, make_database_private, make_private
from maildesk.db import is_postgres, make_engine, require_current_schema
from maildesk.imap import ImapPollers, start_pollers
from maildesk.intake_process import IntakeProcess
from maildesk.lifecycle import STOP_SIGNALS, SignalLatch
from maildesk.liveconfig import LiveConfig
from maildesk.metrics import Metrics, StatusServer, backlog_counts
from maildesk.outbox import OutboxSender, release_claims, transport_from_url
from maildesk.parsepool import ParserPool
from maildesk.processor import Processor
from maildesk.replytoken import bounce_address
from maildesk.sdnotify import Notifier
from maildesk.settings import Settings, split_host_port
from maildesk.slascan import TICKET_JOBS
from maildesk.spam.live import LiveSpamFilter
from maildesk.spam.model import SpamThresholds
from maildesk.spamlearn import SureLearner
from maildesk.spool import Spool, spool_dir

log = logging.getLogger("maildesk")

STOP_SECONDS = 9.0  # SIGTERM to exit, all included (the unit allows more)
SMTP_DRAIN_SECONDS = 5.0  # of which: transactions in flight may finish


async def run_daemon(
    settings: Settings,
    ready: Callable[[int], None] | None = None,
    latch: SignalLatch | None = None,
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
        await _serve(settings, ready, stop, parsers.append)
    finally:
        lock.release()
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def _serve(
    settings: Settings,
    ready: Callable[[int], None] | None,
    stop: asyncio.Event,
    register_parser: Callable[[ParserPool], None],
) -> None:
    loop = asyncio.get_running_loop()
    live = LiveConfig.start(settings)  # ConfigError: refuse to start, with file:line
    for note in live.runtime.notes:
        log.warning("%s", note)
    warning = settings.outbound_warning()
    if warning:
        log.warning("%s", warning)
    engine = make_engine(settings.effective_database_url)
    require_current_schema(engine)
    make_database_private(settings.effective_database_url)
    transport = transport_from_url(settings.effective_outbound)
    if not is_postgres(engine):  # the data directory lock says: nobody else holds claims
        release_claims(engine)

    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    register_parser(parser)
    metrics = Metrics()
    notifier = Notifier()
    sender = OutboxSender(
        engine,
        transport,
        max_attempts=settings.outbox_max_attempts,
        backoff=settings.outbox_backoff_seconds,
        backoff_max=settings.outbox_backoff_max_seconds,
        metrics=metrics,
        return_path=partial(bounce_address, settings.primary_address, key=settings.hmac_key()),
    )
    spam = LiveSpamFilter(
        settings.spam_model_path,
        SpamThresholds(settings.spam_ham_below, settings.spam_spam_above),
    )
    learner = None
    if settings.spam_learn == "sure":
        learner = SureLearner(engine, spam, seconds=settings.spam_learn_seconds)
        recovered = await asyncio.to_thread(learner.recover)
        if recovered:
            log.info("spam learning: %d sure verdicts left from the last run to learn", recovered)
    processor = Processor(
        engine,
        live.current,
        parser,
        on_committed=sender.wake.set,
        spam_filter=spam.current,
        metrics=metrics,
        learner=learner,
    )
    spool = Spool(engine, processor.wake.set, spool_dir(settings.data_dir), metrics)
    spool.start()  # replays what an earlier run left
    intake = IntakeProcess(settings, spool, SMTP_DRAIN_SECONDS)  # SMTP, in its own process
    imap: ImapPollers | None = None
    scheduler = AsyncIOScheduler(event_loop=loop)
    tasks: list[asyncio.Task[Any]] = []
    status: StatusServer | None = None
    serving = False  # past start-up: there may be accepted mail to finish at stop
    try:
        imap = start_pollers(settings, engine, spool) if settings.imap_url else None
        bound_port = await intake.start()
        host = split_host_port(settings.smtp_listen)[0]

        def components() -> dict[str, Any]:
            parts: dict[str, Any] = {"smtp": intake.health()}
            if imap is not None:
                parts["imap"] = imap.health()
            return parts

        status = StatusServer(engine, metrics, components)
        status_host, status_port = split_host_port(settings.metrics_listen)
        try:
            await status.start(status_host, status_port)
        except OSError as exc:  # the mail keeps flowing without /metrics
            log.error(
                "MAILDESK_METRICS_LISTEN=%s: %s; /metrics and /healthz are off",
                settings.metrics_listen,
                exc.strerror,
            )

        async def reload_config() -> None:
            await asyncio.to_thread(live.reload_if_changed, engine)
            await asyncio.to_thread(spam.reload_if_changed)

        async def report_status() -> None:
            notifier.send(status=await _status_line(engine, metrics, stop))

        async def wake_processor() -> None:
            processor.wake.set()

        async def wake_sender() -> None:
            sender.wake.set()

        async def ticket_jobs() -> None:
            """SLA reminders, the unassigned digest, postponed and resolved tickets."""
            runtime = live.current()
            for job in TICKET_JOBS:
                try:
                    await asyncio.to_thread(job, engine, runtime)
                except Exception:  # one failing job must not stop the others or the daemon
                    log.exception("scheduler: %s failed; it runs again shortly", job.__name__)

        scheduler.add_job(ticket_jobs, "interval", seconds=settings.sla_scan_seconds,
                          id="ticket-jobs", max_instances=1, coalesce=True)
        scheduler.add_job(wake_processor, "interval", seconds=5, id="spool-scan")
        scheduler.add_job(wake_sender, "interval", seconds=5, id="outbox-flush")
        scheduler.add_job(reload_config, "interval", seconds=5, id="config-reload")
        if notifier.enabled:
            scheduler.add_job(report_status, "interval", seconds=10, id="sd-status")
        scheduler.start()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload_config()))

        await processor.warm_up()
        tasks.append(loop.create_task(processor.run_forever(), name="pipeline"))
        tasks.append(loop.create_task(sender.run_forever(), name="outbox"))
        if learner is not None:
            tasks.append(loop.create_task(learner.run_forever(), name="spam-learning"))
        if notifier.watchdog_seconds:
            tasks.append(loop.create_task(_watchdog(notifier), name="watchdog"))
        await asyncio.to_thread(_ping_database, engine)  # reachable right now
        log.info(
            "maildesk listening for SMTP on %s:%d for %s; outbound: %s",
            host,
            bound_port,
            ", ".join(settings.support_addresses),
            settings.effective_outbound,
        )
        if not stop.is_set():
            notifier.send(ready=1, status=f"SMTP on {host}:{bound_port}; no mail yet")
            if ready:
                ready(bound_port)
        serving = True
        await stop.wait()
    finally:
        notifier.send(stopping=1, status="stopping")
        deadline = time.monotonic() + STOP_SECONDS
        log.info("maildesk stopping")
        await intake.stop()  # new sessions get 421, transactions in flight finish
        if status is not None:
            await status.stop()
        if imap is not None:
            await imap.stop(grace=2.0)
        if scheduler.running:
            scheduler.shutdown(wait=False)
        for task in tasks:
            if task.get_name() != "pipeline":
                task.cancel()
        # Mail that got its 250 is stored and processed now (its confirmation goes out
        # below), unless time runs short: then it waits, durably spooled, for the next start.
        await spool.stop()
        if serving:
            with contextlib.suppress(TimeoutError):
                budget = max(0.5, deadline - time.monotonic() - 2)
                await asyncio.wait_for(processor.drain(), budget)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(processor.close)  # a batch being committed finishes
        if learner is not None:  # what is left stays queued for the next start if this fails
            try:
                await asyncio.to_thread(learner.flush)
            except Exception:
                log.exception("spam learning: last batch not learned; it is at the next start")
        if serving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sender.flush(), max(0.5, deadline - time.monotonic()))
        parser.close()
        engine.dispose()
        log.info("maildesk stopped")


def _ping_database(engine: Any) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 at half the period while the event loop runs. A database outage does
    not stop the pings (a restart would not cure it); a hung loop does."""
    assert notifier.watchdog_seconds
    while True:
        notifier.send(watchdog=1)
        await asyncio.sleep(notifier.watchdog_seconds / 2)


async def _status_line(engine: Any, metrics: Metrics, stop: asyncio.Event) -> str:
    totals = metrics.totals()
    try:
        backlog = await asyncio.to_thread(backlog_counts, engine)
        waiting = f"waiting: {backlog['inbound_new']} in, {backlog['outbox_queued']} out"
    except Exception:
        waiting = "database unreachable"
    return (
        f"{'stopping; ' if stop.is_set() else ''}{totals['accepted']} mails accepted, "
        f"{totals['processed']} processed, {totals['sent']} sent; {waiting}"
    )
