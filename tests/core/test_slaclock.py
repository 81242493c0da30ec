"""The SLA clocks of one ticket (pure): due and warning times, pauses, the steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from maildesk.core import slaclock
from maildesk.core.businesstime import Calendar
from maildesk.core.sla import Level

ALWAYS = Calendar.always(ZoneInfo("UTC"))
OFFICE = Calendar(ZoneInfo("Europe/Berlin"), (((540, 1020),),) * 5 + ((), ()), frozenset())
LEVEL = Level.model_validate({
    "first_response": "2h", "next_response": "1h", "resolution": "8h", "warn_before": "30m",
    "escalation": [{"after": "0m", "notify": "assignee", "template": "sla_breach"},
                   {"after": "1h", "notify": "group_lead", "template": "sla_escalation"}],
})
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


def test_a_new_ticket_gets_first_response_and_resolution_deadlines() -> None:
    clocks = slaclock.start(LEVEL, ALWAYS, T0)
    assert clocks.first_response_due == T0 + timedelta(hours=2)
    assert clocks.first_response_warn == T0 + timedelta(hours=1, minutes=30)
    assert clocks.resolution_due == T0 + timedelta(hours=8)
    assert clocks.next_response_due is None


def test_the_steps_in_time_order_with_keys_per_deadline() -> None:
    steps = slaclock.plan(slaclock.start(LEVEL, ALWAYS, T0), LEVEL, ALWAYS, "open", False)
    first = [(s.kind, s.at - T0, s.notify) for s in steps if s.target == "first_response"]
    assert first == [("warn", timedelta(minutes=90), "assignee"),
                     ("breach", timedelta(hours=2), "assignee"),
                     ("escalation1", timedelta(hours=3), "group_lead")]
    assert len({s.key for s in steps}) == len(steps)
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    # answered: the first-response steps are gone, the resolution ones stay
    answered = slaclock.plan(slaclock.start(LEVEL, ALWAYS, T0), LEVEL, ALWAYS, "open", True)
    assert {s.target for s in answered} == {"resolution"}


def test_a_pause_moves_what_is_left_by_the_working_time_it_stood() -> None:
    clocks = slaclock.start(LEVEL, OFFICE, T0)  # Berlin 09:00-17:00 Mon-Fri; T0 is 11:00
    assert clocks.first_response_due == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    paused = slaclock.status_changed(clocks, LEVEL, OFFICE, "pending", T0 + timedelta(hours=1))
    assert paused.paused_at == T0 + timedelta(hours=1)
    assert slaclock.plan(paused, LEVEL, OFFICE, "pending", False) == []
    # back the next morning at 09:00 Berlin: 5 working hours stood (12:00-17:00 Berlin)
    resumed = slaclock.status_changed(paused, LEVEL, OFFICE, "open",
                                      datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
    assert resumed.paused_at is None
    # one working hour was left at the pause: due at 10:00 Berlin, 09:00 UTC
    assert resumed.first_response_due == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_a_customer_reply_starts_the_next_response_clock_once_answered() -> None:
    clocks = slaclock.start(LEVEL, ALWAYS, T0)
    before = slaclock.customer_replied(clocks, LEVEL, ALWAYS, False, T0 + timedelta(hours=1))
    assert before.next_response_due is None  # the first answer is still due
    later = T0 + timedelta(hours=3)
    after = slaclock.customer_replied(clocks, LEVEL, ALWAYS, True, later)
    assert after.next_response_due == later + timedelta(hours=1)
    assert slaclock.staff_answered(after).next_response_due is None


def test_resolved_stops_every_clock_and_reopen_runs_them_again() -> None:
    clocks = slaclock.start(LEVEL, ALWAYS, T0)
    resolved = slaclock.status_changed(clocks, LEVEL, ALWAYS, "resolved", T0)
    assert slaclock.plan(resolved, LEVEL, ALWAYS, "resolved", True) == []
    reopened = slaclock.status_changed(resolved, LEVEL, ALWAYS, "open", T0 + timedelta(hours=4))
    assert reopened.resolution_due == T0 + timedelta(hours=12)
