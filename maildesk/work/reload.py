"""The live configuration: reloaded when rules.yaml, sla.yaml or a template changes.

A reload with errors keeps the last good configuration (DESIGN invariant 6):
each problem is logged as one file:line line, and the admins get one mail.
"""

from __future__ import annotations

import asyncio
import html
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session

from maildesk.config.runtime import Runtime, load_runtime
from maildesk.config.settings import Settings
from maildesk.core.compose import compose
from maildesk.core.render import RenderedMail
from maildesk.errors import ConfigError
from maildesk.spam.live import LiveSpamFilter
from maildesk.storage.models import Outbox
from maildesk.worker import Worker

log = logging.getLogger("maildesk.config")

RELOAD_SECONDS = 5.0  # how often the files are looked at (SIGHUP: at once)


def config_stamp(settings: Settings) -> tuple[float, ...]:
    paths = [settings.rules, settings.sla, *sorted(settings.templates.rglob("*"))]
    return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)


@dataclass
class LiveConfig:
    runtime: Runtime
    stamp: tuple[float, ...]

    @classmethod
    def start(cls, settings: Settings) -> LiveConfig:
        return cls(load_runtime(settings), config_stamp(settings))

    def current(self) -> Runtime:
        return self.runtime

    def reload_if_changed(self, engine: Engine) -> bool:
        """Reload on change; returns False when a change was refused."""
        settings = self.runtime.settings
        stamp = config_stamp(settings)
        if stamp == self.stamp:
            return True
        self.stamp = stamp
        try:
            self.runtime = load_runtime(settings)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload refused, keeping the last good config: %s", problem)
            _tell_admins(engine, self.runtime, exc.problems)
            return False
        log.info("config reloaded")
        return True


class ConfigReloader(Worker):
    """Reloads the configuration and the spam model when their files change (every
    few seconds, and at once on SIGHUP: `wake`)."""

    name = "config"
    idle_seconds = RELOAD_SECONDS

    def __init__(self, live: LiveConfig, spam: LiveSpamFilter, engine: Engine) -> None:
        super().__init__()
        self._live = live
        self._spam = spam
        self._engine = engine

    async def run_once(self) -> None:
        await asyncio.to_thread(self._live.reload_if_changed, self._engine)
        await asyncio.to_thread(self._spam.reload_if_changed)


def _tell_admins(engine: Engine, runtime: Runtime, problems: list[str]) -> None:
    admins = tuple(m.email for m in runtime.rules.admins)
    if not admins:
        return
    intro = "maildesk refused a configuration change and keeps running on the last good one."
    text = "\n".join([intro, "", *problems, "", "Fix the files; `maildesk check` explains."])
    body = RenderedMail(
        text=text,
        html="<p>" + html.escape(intro) + "</p><pre>" + html.escape("\n".join(problems)) + "</pre>",
    )
    now = datetime.now(UTC)
    out = compose(
        from_addr=runtime.settings.primary_address,
        from_name="maildesk",
        to=admins,
        subject="maildesk: configuration change refused",
        body=body,
        now=now,
        automatic=True,
    )
    with Session(engine) as session:
        session.add(
            Outbox(
                kind="config_error",
                mail_from=out.mail_from,
                recipients=list(admins),
                rcpt=admins[0],
                message_id=out.message_id,
                raw=out.raw,
                created_at=now,
                next_attempt_at=now,
            )
        )
        session.commit()
