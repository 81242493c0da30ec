"""/metrics (Prometheus) and /healthz on MAILDESK_METRICS_LISTEN: a tiny asyncio HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from maildesk.metrics import Metrics
from maildesk.storage.db import read_only
from maildesk.storage.models import Inbound, Outbox

log = logging.getLogger(__name__)


def backlog_counts(engine: Engine) -> dict[str, int]:
    with Session(read_only(engine)) as session:
        inbound = session.exec(
            select(func.count()).select_from(Inbound).where(Inbound.status == "new")
        ).one()
        failed_in = session.exec(
            select(func.count()).select_from(Inbound).where(Inbound.status == "failed")
        ).one()
        rows = session.exec(select(Outbox.status, func.count()).group_by(Outbox.status)).all()
    counts = {f"outbox_{status}": int(n) for status, n in rows}
    return {
        "inbound_new": int(inbound),
        "inbound_failed": int(failed_in),
        "outbox_queued": counts.get("outbox_queued", 0),
        "outbox_failed": counts.get("outbox_failed", 0),
    }


class StatusServer:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        components: Callable[[], dict[str, Any]],
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._components = components
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def health(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = dict(self._components())
        try:
            body["backlog"] = await asyncio.to_thread(backlog_counts, self._engine)
            body["database"] = "ok"
        except Exception as exc:
            body["database"] = f"error: {str(exc).splitlines()[0]}"
        degraded = (
            body["database"] != "ok"
            or any(
                isinstance(c, dict) and c.get("state") in ("auth_failed", "backoff")
                for c in body.get("imap", [])
            )
            or any(w.get("state") == "failing" for w in body.get("workers", {}).values())
        )
        body["status"] = "degraded" if degraded else "ok"
        return (503 if body["database"] != "ok" else 200), body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else "/"
            if path == "/healthz":
                code, body = await self.health()
                payload, ctype = json.dumps(body, default=str).encode(), "application/json"
            elif path == "/metrics":
                backlog = await asyncio.to_thread(backlog_counts, self._engine)
                for queue, count in backlog.items():
                    self._metrics.backlog.labels(queue).set(count)
                code, payload = 200, generate_latest(self._metrics.registry)
                ctype = "text/plain; version=0.0.4"
            else:
                code, payload, ctype = 404, b"not found\n", "text/plain"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        except Exception:
            log.exception("status server: request failed")
        finally:
            writer.close()
