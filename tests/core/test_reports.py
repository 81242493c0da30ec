"""The reports' pure core: quantiles, breach rules, grouping, windows, clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from maildesk.config.files import load_sla
from maildesk.core.reports import (
    ReportInputError,
    TicketFacts,
    day_window,
    first_response_breached,
    month_window,
    overdue_horizon,
    overdue_report,
    previous_month,
    quantile,
    resolution_breached,
    sla_report,
)
from maildesk.errors import ConfigError
from maildesk.work.client_report import ClientSelector, client_reports, select_client

REPO = Path(__file__).resolve().parents[2]
MSK = ZoneInfo("Europe/Moscow")
SLA = load_sla(REPO / "sla.yaml")


def msk(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK).astimezone(UTC)


def ticket(id: int = 1, **kw: object) -> TicketFacts:
    base: dict[str, object] = dict(
        subject="help", status="open", requester="ann@client.example", assignee=None,
        sla_level="standard", priority="normal", created_at=msk(4, 18, 30),
    )
    base.update(kw)
    return TicketFacts(id=id, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7], 0.9, 7),
        ([3, 1, 2], 0.5, 2),
        ([1, 2, 3, 4], 0.5, 2.5),
        (list(range(1, 11)), 0.9, 9.1),
        ([10, 20], 0.9, 19),
        ([5, 5, 5, 100], 0.5, 5),
    ],
)
def test_quantile_interpolates_between_closest_ranks(
    values: list[float], q: float, expected: float | None
) -> None:
    got = quantile(values, q)
    assert got == pytest.approx(expected) if expected is not None else got is None


NOW = msk(10, 12)
DUE = msk(7, 16, 30)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),  # no target
        ({"first_response_due": DUE, "first_response_at": msk(7, 11)}, False),
        ({"first_response_due": DUE, "first_response_at": msk(7, 16, 31)}, True),
        ({"first_response_due": DUE, "first_response_at": DUE}, False),  # on time is on time
        ({"first_response_due": DUE}, True),  # none yet, due passed by now
        ({"first_response_due": msk(11, 10)}, False),  # none yet, still time
        # closed without an answer: the clock stopped when it was closed
        ({"first_response_due": DUE, "status": "closed", "closed_at": msk(7, 12)}, False),
        ({"first_response_due": DUE, "status": "closed", "closed_at": msk(8, 12)}, True),
    ],
)
def test_first_response_breach(kw: dict[str, object], expected: bool | None) -> None:
    assert first_response_breached(ticket(**kw), NOW) is expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),
        ({"resolution_due": DUE}, True),
        ({"resolution_due": DUE, "status": "resolved", "resolved_at": msk(7, 15)}, False),
        ({"resolution_due": DUE, "status": "closed", "resolved_at": msk(7, 17),
          "closed_at": msk(7, 15)}, True),  # the resolution counts, not the closing
        # reopened: an old resolution no longer stops the clock
        ({"resolution_due": DUE, "status": "open", "resolved_at": msk(7, 15)}, True),
        ({"resolution_due": msk(12, 10), "status": "open"}, False),
    ],
)
def test_resolution_breach(kw: dict[str, object], expected: bool | None) -> None:
    assert resolution_breached(ticket(**kw), NOW) is expected


def test_friday_evening_ticket_answered_monday_counts_working_hours_only() -> None:
    # standard: Moscow 10:00-19:00 Mon-Fri, first response 24h (due Thu 16:30).
    friday = ticket(1, assignee="alice@example.com", first_response_due=msk(9, 16, 30),
                    first_response_at=msk(7, 11), status="resolved", resolved_at=msk(8, 13),
                    resolution_due=msk(17, 16, 30), rating="good")
    # Created Monday 10:00, answered Thursday 12:00: 3 days + 2 h = 29 h, late (due Thu 10:00).
    slow = ticket(2, assignee="alice@example.com", created_at=msk(7, 10),
                  first_response_due=msk(10, 10), first_response_at=msk(10, 12), rating="bad",
                  reminders=2)
    # Partner ticket, unassigned, not answered yet and 4 working hours past due.
    waiting = ticket(3, sla_level="partner", created_at=msk(9, 10), first_response_due=msk(9, 14))
    rows = {(r.by, r.key): r for r in sla_report([friday, slow, waiting], SLA, NOW)}
    assert list(rows) == [("level", "standard"), ("level", "partner"),
                          ("assignee", "alice@example.com"), ("assignee", "(unassigned)"),
                          ("total", "all")]
    alice = rows["assignee", "alice@example.com"]
    # Friday 18:30-19:00 and Monday 10:00-11:00: 1.5 working hours; the other 29 h.
    assert (alice.tickets, alice.answered) == (2, 2)
    assert alice.first_response_median == 0.5 * (90 + 29 * 60)
    assert alice.first_response_p90 == pytest.approx(90 + 0.9 * (29 * 60 - 90))
    assert (alice.first_response_breaches, alice.first_response_targets) == (1, 2)
    # Friday 18:30 to Tuesday 13:00: 0.5 + 9 + 3 = 12.5 h.
    assert (alice.resolved, alice.resolution_median) == (1, 12.5 * 60)
    assert (alice.good, alice.bad, alice.reminders) == (1, 1, 2)
    partner = rows["level", "partner"]
    assert (partner.answered, partner.first_response_median, partner.first_response_breaches) == (
        0, None, 1)
    total = rows["total", "all"].as_dict()
    assert total["first_response_breaches"] == 2
    assert total["first_response_breach_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert total["first_response_median_hours"] == pytest.approx(15.25)
    assert total["resolution_breach_share"] == 0.0


def test_empty_window_gives_a_total_row_of_zeroes() -> None:
    (total,) = sla_report([], SLA, NOW)
    assert total.as_dict()["tickets"] == 0
    assert total.as_dict()["first_response_breach_share"] is None


def test_overdue_lists_past_and_near_deadlines_most_urgent_first() -> None:
    now = msk(7, 15)  # Monday 15:00 Moscow
    late = ticket(1, first_response_due=msk(7, 11))  # 4 working hours ago
    near = ticket(2, sla_level="standard", first_response_due=msk(7, 16, 30))  # in 1.5 h < 2 h
    far = ticket(3, first_response_due=msk(8, 12))
    answered = ticket(4, first_response_due=msk(7, 11), first_response_at=msk(7, 10),
                      resolution_due=msk(7, 14))
    paused = ticket(5, status="pending", first_response_due=msk(7, 11))
    done = ticket(6, status="closed", first_response_due=msk(7, 11))
    # Partner (1 h warning) due Monday 10:30: near from Friday 18:30 on (30 working
    # minutes on Friday, 30 on Monday), not a minute before.
    weekend = ticket(7, sla_level="partner", first_response_due=msk(7, 10, 30))
    rows = overdue_report([late, near, far, answered, paused, done, weekend], SLA, now)
    assert [(r.ticket.id, [(d.target, d.working_minutes) for d in r.deadlines]) for r in rows] == [
        (7, [("first_response", -270)]),
        (1, [("first_response", -240)]),
        (4, [("resolution", -60)]),
        (2, [("first_response", 90)]),
    ]
    friday = overdue_report([weekend], SLA, msk(4, 18, 30))
    assert [d.working_minutes for d in friday[0].deadlines] == [60]
    assert overdue_report([weekend], SLA, msk(4, 18, 29)) == []
    assert overdue_horizon(SLA, msk(4, 18, 30)) >= msk(7, 11, 30)  # standard's 2 h


def test_clients_group_by_configured_client_or_domain() -> None:
    done = {"status": "closed", "closed_at": msk(20, 12)}
    tickets = [
        ticket(1, requester="a@partner.example", time_spent_minutes=30, rating="good", **done),
        ticket(2, requester="b@eu.partner.example", time_spent_minutes=45, **done),
        ticket(3, requester="c@other.example", rating="bad", **done),
        ticket(4, requester="d@other.example", **done),
        ticket(5, requester="e@third.example", **done),
    ]
    reports = client_reports(tickets, SLA)
    assert [(r.client, r.title, len(r.tickets), r.time_spent_minutes, r.good, r.bad)
            for r in reports] == [
        ("other.example", "other.example", 2, 0, 0, 1),
        ("partner", "Partner Ltd", 2, 75, 1, 0),
        ("third.example", "third.example", 1, 0, 0, 0),
    ]
    only = select_client(SLA, "c@other.example")
    assert only == ClientSelector("other.example", address="c@other.example")
    assert [t.id for r in client_reports(tickets, SLA, only) for t in r.tickets] == [3]
    assert select_client(SLA, "x@partner.example") == ClientSelector("partner")
    assert select_client(SLA, "EU.Partner.example") == ClientSelector("partner")
    assert select_client(SLA, "partner") == ClientSelector("partner")
    assert client_reports(tickets, SLA, select_client(SLA, "nobody.example")) == []


@pytest.mark.parametrize("value", ["not a domain", "@partner.example", "bob", "a@b", "x@@y.z"])
def test_bad_client_is_one_clear_line(value: str) -> None:
    with pytest.raises(ReportInputError, match=r"^--client .*: not a client name \(partner\), "
                                                r"a domain or an address$"):
        select_client(SLA, value)


def test_windows_are_days_and_months_of_the_teams_zone() -> None:
    now = msk(10, 12)
    assert month_window("2026-12", MSK) == (msk(1, 0), datetime(2027, 1, 1, tzinfo=MSK))
    assert previous_month(now, MSK) == "2026-11"
    assert previous_month(datetime(2027, 1, 1, 0, 30, tzinfo=MSK), MSK) == "2026-12"
    assert day_window("2026-12-01", "2026-12-07", MSK, now) == (msk(1, 0), msk(8, 0))
    assert day_window(None, None, MSK, now) == (now - timedelta(days=30), now)
    for args, message in [
        (("2026-13-01", None), "--from '2026-13-01': not a date like 2026-11-30"),
        ((None, "yesterday"), "--to 'yesterday': not a date like 2026-11-30"),
        (("2026-12-08", "2026-12-07"), "--from 2026-12-08 is after --to 2026-12-07"),
    ]:
        with pytest.raises(ReportInputError) as caught:
            day_window(*args, MSK, now)
        assert str(caught.value) == message
    for bad in ("2026-13", "2026-1", "november", "2026-00"):
        with pytest.raises(ReportInputError, match=r"--month .*: not a month like 2026-11"):
            month_window(bad, MSK)


def _with_clients(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sla.yaml"
    path.write_text((REPO / "sla.yaml").read_text(encoding="utf-8").split("\nclients:")[0]
                    + "\nclients:\n" + text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("clients", "line", "message"),
    [
        ("  acme:\n    contacts: [boss@acme.example]\n", 0,
         "clients.acme: a client needs domains or addresses"),
        ("  acme:\n    domains: [acme.example]\n    contacts: [boss at acme]\n", 2,
         "clients.acme.contacts.0: 'boss at acme' is not a mail address"),
        ("  acme:\n    domains: [acme.example, 'not a domain']\n", 1,
         "clients.acme.domains.1: 'not a domain' is not a domain like example.com"),
        ("  acme:\n    domains: [acme.example]\n    colour: red\n", 2,
         "clients.acme.colour: Extra inputs are not permitted"),
        ("  acme:\n    domains: [acme.example]\n  acme2:\n    domains: [ACME.example]\n", 3,
         "clients.acme2.domains.0: acme.example already belongs to client 'acme'"),
    ],
)
def test_client_mistakes_are_reported_at_their_line(
    tmp_path: Path, clients: str, line: int, message: str
) -> None:
    path = _with_clients(tmp_path, clients)
    first = path.read_text(encoding="utf-8").splitlines().index("clients:") + 2
    with pytest.raises(ConfigError) as caught:
        load_sla(path)
    assert caught.value.problems[0].startswith(f"{path}:{first + line}: {message}")


def test_an_address_of_a_client_wins_over_a_domain(tmp_path: Path) -> None:
    sla = load_sla(_with_clients(tmp_path, (
        "  acme:\n    domains: [acme.example]\n"
        "  ceo:\n    addresses: [Boss@Acme.Example]\n    contacts: [boss@acme.example]\n")))
    assert sla.client_of("boss@acme.example") == "ceo"
    assert sla.client_of("Ann@Sales.ACME.example") == "acme"
    assert sla.client_of("x@notacme.example") == "notacme.example"
