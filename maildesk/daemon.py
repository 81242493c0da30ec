"""`maildesk run`: wire the pieces onto one asyncio loop and keep them running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from maildesk.db import is_postgres, make_engine, require_current_schema
from maildesk.errors import ConfigError
from maildesk.imap import start_pollers
from maildesk.listener import IntakeHandler, make_smtp_factory
from maildesk.liveconfig import LiveConfig
from maildesk.metrics import Metrics, StatusServer
from maildesk.outbox import OutboxSender, release_claims, transport_from_url
from maildesk.parsepool import ParserPool
from maildesk.processor import Processor
from maildesk.settings import Settings, split_host_port
from maildesk.spam.live import LiveSpamFilter
from maildesk.spam.model import SpamThresholds
from maildesk.spool import Spool

log = logging.getLogger("maildesk")


async def run_daemon(settings: Settings, ready: Callable[[int], None] | None = None) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    live = LiveConfig.start(settings)  # ConfigError: refuse to start, with file:line
    engine = make_engine(settings.effective_database_url)
    require_current_schema(engine)
    transport = transport_from_url(settings.effective_outbound)
    if not is_postgres(engine):  # one instance per SQLite file: nobody else holds claims
        release_claims(engine)

    parser = ParserPool(timeout=settings.parse_timeout_seconds)
    metrics = Metrics()
    sender = OutboxSender(
        engine,
        transport,
        max_attempts=settings.outbox_max_attempts,
        backoff=settings.outbox_backoff_seconds,
        backoff_max=settings.outbox_backoff_max_seconds,
        metrics=metrics,
    )
    spam = LiveSpamFilter(
        settings.spam_model_path,
        SpamThresholds(settings.spam_ham_below, settings.spam_spam_above),
    )
    processor = Processor(
        engine,
        live.current,
        parser,
        on_committed=sender.wake.set,
        spam_filter=spam.current,
        metrics=metrics,
    )
    spool = Spool(engine, on_stored=processor.wake.set)
    loop = asyncio.get_running_loop()
    spool.start()
    imap = start_pollers(settings, engine, spool) if settings.imap_url else None

    host, port = split_host_port(settings.smtp_listen)
    handler = IntakeHandler(spool, settings.support_addresses, metrics)
    try:
        server = await loop.create_server(
            make_smtp_factory(handler, settings.max_message_bytes, settings.hostname), host, port
        )
    except OSError as exc:
        await spool.stop()
        parser.close()
        raise ConfigError(f"MAILDESK_SMTP_LISTEN={settings.smtp_listen}: {exc.strerror}") from None
    bound_port = server.sockets[0].getsockname()[1]
    status = StatusServer(engine, metrics, lambda: {"smtp": f"listening on {host}:{bound_port}"})
    status_host, status_port = split_host_port(settings.metrics_listen)
    try:
        await status.start(status_host, status_port)
    except OSError as exc:  # the mail keeps flowing without /metrics
        log.error(
            "MAILDESK_METRICS_LISTEN=%s: %s; /metrics and /healthz are off",
            settings.metrics_listen,
            exc.strerror,
        )

    async def wake_processor() -> None:
        processor.wake.set()

    async def wake_sender() -> None:
        sender.wake.set()

    async def reload_config() -> None:
        await asyncio.to_thread(live.reload_if_changed, engine)
        await asyncio.to_thread(spam.reload_if_changed)

    scheduler = AsyncIOScheduler(event_loop=loop)
    scheduler.add_job(wake_processor, "interval", seconds=5, id="spool-scan")
    scheduler.add_job(wake_sender, "interval", seconds=5, id="outbox-flush")
    scheduler.add_job(reload_config, "interval", seconds=5, id="config-reload")
    scheduler.start()

    await processor.warm_up()
    tasks = [
        loop.create_task(processor.run_forever(), name="pipeline"),
        loop.create_task(sender.run_forever(), name="outbox"),
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload_config()))
    log.info(
        "maildesk listening for SMTP on %s:%d for %s; outbound: %s",
        host,
        bound_port,
        ", ".join(settings.support_addresses),
        settings.effective_outbound,
    )
    if ready:
        ready(bound_port)
    try:
        await stop.wait()
    finally:
        log.info("maildesk stopping")
        server.close()
        await server.wait_closed()
        await status.stop()
        if imap is not None:
            await imap.stop()
        scheduler.shutdown(wait=False)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await spool.stop()
        processor.close()
        parser.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        engine.dispose()
