"""The Prometheus counters every part of the daemon increments (a leaf: imports nothing of
maildesk, so intake, work and the status server share it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    """Counters the IO shell increments; gauges read from the database at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "maildesk_mails_accepted",
            "Mails durably stored (SMTP 250 or IMAP)",
            ["source"],
            registry=self.registry,
        )
        self.processed = Counter(
            "maildesk_mails_processed",
            "Mails through the pipeline, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.sent = Counter(
            "maildesk_outbox_deliveries",
            "Outbound delivery attempts, by result",
            ["result"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "maildesk_backlog", "Rows waiting, by queue", ["queue"], registry=self.registry
        )

    def totals(self) -> dict[str, int]:
        """Mails accepted, processed and sent since start (for systemd's STATUS=)."""
        out = {"accepted": 0, "processed": 0, "sent": 0}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == "maildesk_mails_accepted_total":
                    out["accepted"] += int(sample.value)
                elif sample.name == "maildesk_mails_processed_total":
                    out["processed"] += int(sample.value)
                elif (
                    sample.name == "maildesk_outbox_deliveries_total"
                    and sample.labels.get("result") == "sent"
                ):
                    out["sent"] += int(sample.value)
        return out
