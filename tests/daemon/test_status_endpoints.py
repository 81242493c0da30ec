"""/metrics and /healthz of a running daemon, read over real HTTP."""

from __future__ import annotations

import json
import urllib.request

from tests.conftest import wait_for
from tests.mailkit import make_mail, send


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_metrics_and_health(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()
    base = "http://" + d.env["MAILDESK_METRICS_LISTEN"]
    send(d.port, make_mail(subject="Counted"))
    wait_for(lambda: d.scalar("select count(*) from outbox where status = 'sent'") == 2)
    _, text = _get(base + "/metrics")
    assert 'maildesk_mails_accepted_total{source="smtp"} 1.0' in text
    assert 'maildesk_mails_processed_total{outcome="done"} 1.0' in text
    assert 'maildesk_outbox_deliveries_total{result="sent"} 2.0' in text
    assert 'maildesk_backlog{queue="inbound_new"} 0.0' in text
    code, body = _get(base + "/healthz")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["database"] == "ok"
    assert health["smtp"] == f"listening on 127.0.0.1:{d.port}"
    assert health["backlog"]["outbox_failed"] == 0
    assert health["spool"] == {"bytes_not_in_database": 0}  # every accepted mail stored
