"""What the customer is told when staff change a ticket (pure)."""

from __future__ import annotations

from maildesk.core.decision import MailIntent
from maildesk.core.quotes import strip_reply
from maildesk.core.updates import customer_updates, resolve_with_answer
from tests.core.test_core_decide import ticket

ALL = frozenset({"assigned", "resolved", "closed", "reopened"})


def events(intents: tuple[MailIntent, ...]) -> list[str]:
    return [i.event for i in intents]


def test_each_change_its_mail_and_only_when_enabled() -> None:
    open_ticket = ticket("open")
    assert events(customer_updates(open_ticket, None, (("assignee", "bob@example.com"),),
                                   ALL)) == ["assigned"]
    assert customer_updates(open_ticket, None, (("assignee", "alice@example.com"),), ALL) == ()
    assert events(customer_updates(open_ticket, "resolved", (), ALL)) == ["resolved"]
    assert events(customer_updates(open_ticket, "closed", (), ALL)) == ["closed"]
    assert events(customer_updates(ticket("closed"), "open", (), ALL)) == ["reopened"]
    assert customer_updates(open_ticket, "open", (), ALL) == ()  # not a reopen
    assert customer_updates(open_ticket, "closed", (), ALL - {"closed"}) == ()
    # a merge closes without a "closed" mail; assigning while closing tells only the close
    assert customer_updates(open_ticket, "closed", (("merged_into", "3"),), ALL) == ()
    assert events(customer_updates(open_ticket, "closed", (("assignee", "bob@example.com"),),
                                   ALL)) == ["closed"]
    assert all(i.recipients == ("ann@customer.org",) for i in
               customer_updates(open_ticket, "resolved", (), ALL))


def test_a_resolving_answer_becomes_the_resolution_mail() -> None:
    answer = MailIntent("answer", ("ann@customer.org",), "en", "answer", cc=("carl@x.org",),
                        author="alice@example.com", reply=strip_reply("Fixed it.", None))
    note = MailIntent("notification", ("bob@example.com",), "en", "answer")
    updates = customer_updates(ticket("open"), "resolved", (), ALL)
    merged = resolve_with_answer((answer, note), updates)
    assert [m.template for m in merged] == ["notification", "update"]
    resolution = merged[1]
    assert resolution.event == "resolved" and resolution.cc == ("carl@x.org",)
    assert resolution.reply is not None and resolution.reply.text == "Fixed it."
    # nothing to merge: both kept
    assert resolve_with_answer((answer,), ()) == (answer,)
