"""How `maildesk spam eval` prints its figures: a table, or one JSON object."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from maildesk.spam.evaluate import EvalReport, OnlineReport
    from maildesk.spam.model import SpamThresholds

out = Console(highlight=False, soft_wrap=True, markup=False)


def print_online(report: OnlineReport, thresholds: SpamThresholds, as_json: bool) -> None:
    learned = {
        "corrections": "learning only staff corrections",
        "sure": "learning sure verdicts at once and staff corrections",
    }[report.learning]
    mode = f"online: a fresh model, mails in Date order, {learned}"
    if as_json:
        print(
            json.dumps(
                {"mode": mode, "thresholds": thresholds_json(thresholds), **report.to_json()}
            )
        )
        return
    out.print(
        f"{mode}; bands: ham < {thresholds.ham_below} <= unsure <= {thresholds.spam_above} < spam"
    )
    table = Table(
        "mails",
        "ham",
        "spam",
        "ham quarantined",
        "ham held",
        "spam let through",
        "spam unsure",
        "staff decisions",
        "self-learned",
        title="cumulative",
    )
    rows = [(f"{r.mails}", r) for r in report.checkpoints]
    if report.after_warmup is not None:
        last = report.checkpoints[-1].mails
        rows.append((f"{report.warmup + 1}-{last} only", report.after_warmup))
    for label, rates in rows:
        table.add_row(
            label,
            str(rates.ham),
            str(rates.spam),
            f"{rates.ham_quarantined:.2%}",
            f"{rates.ham_held:.2%}",
            f"{rates.spam_through:.2%}",
            f"{rates.spam_unsure:.2%}",
            str(rates.learned),
            str(rates.self_learned),
        )
    out.print(table)


def thresholds_json(thresholds: SpamThresholds) -> dict[str, Any]:
    return {"ham_below": thresholds.ham_below, "spam_above": thresholds.spam_above}


def print_report(mode: str, result: EvalReport, thresholds: SpamThresholds) -> None:
    out.print(
        f"{mode}; bands: ham < {thresholds.ham_below} <= unsure <= {thresholds.spam_above} < spam"
    )
    out.print(f"mails {result.mails} (ham {result.ham}, spam {result.spam})")
    auc = "n/a" if result.auc is None else f"{result.auc:.4f}"
    out.print(
        f"accuracy {result.accuracy:.4f} (at 0.5: {result.accuracy_at_half:.4f})  "
        f"precision {result.precision:.4f}  recall {result.recall:.4f}  auc {auc}"
    )
    out.print(
        f"fp_rate {result.fp_rate:.4%} (ham in the spam band)  "
        f"fn_rate {result.fn_rate:.2%} (spam in the ham band)"
    )
    out.print(f"unsure {result.unsure} (ham {result.unsure_ham}, spam {result.unsure_spam})")
    table = Table("actual \\ band", "ham", "unsure", "spam", title="confusion")
    for actual, bands in result.confusion.items():
        table.add_row(actual, *(str(bands[b]) for b in ("ham", "unsure", "spam")))
    out.print(table)
    if result.latency_ms_p50 is not None and result.latency_ms_p99 is not None:
        out.print(
            f"scoring latency p50 {result.latency_ms_p50:.3f} ms  "
            f"p99 {result.latency_ms_p99:.3f} ms"
        )
    if result.train_seconds is not None:
        out.print(f"training {result.train_seconds:.2f} s for {result.train_mails} mails")
