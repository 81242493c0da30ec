"""Threading as a conversation on a mailing list has it: real `maildesk run`, real SMTP."""

from __future__ import annotations

import json

from tests.conftest import maildesk_cli, wait_for
from tests.mailkit import make_mail, send


def test_a_conversation_with_a_stranger_stays_on_the_starters_ticket(start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon()

    def mail(n: int, sender: str, subject: str, **headers: str) -> None:
        raw = make_mail(sender=sender, subject=subject, body=f"Message number {n}.",
                        message_id=f"<m{n}@example.org>", cc="ann@example.org, list@lists.test",
                        headers={"List-Post": "<mailto:list@lists.test>", **headers})
        send(d.port, raw, mail_from=sender)

    def settle(count: int) -> None:
        wait_for(lambda: d.scalar("select count(*) from inbound where status != 'new'") == count)

    mail(1, "ann@example.org", "Orca is silent")
    settle(1)
    # a stranger answers ann: not on ticket 1, so a ticket of their own, linked to 1
    mail(2, "bea@other.test", "Re: Orca is silent", **{"In-Reply-To": "<m1@example.org>"})
    settle(2)
    assert d.scalar("select linked_to from ticket where id = 2") == 1
    # ann answers bea's mail (bare id, as some clients write it): back on ann's ticket
    mail(3, "ann@example.org", "Re: Orca is silent", **{"In-Reply-To": "m2@example.org"})
    # ann again, references newest first lead to bea's ticket first, ann's own wins
    mail(4, "ann@example.org", "Re: Orca is silent",
         References="<m1@example.org> <m2@example.org>")
    # two tags: her own ticket wins over the one she is only cc on
    mail(5, "ann@example.org", "Re: [MD-1] Fwd: [MD-2] Orca")
    # a tag Outlook mangled
    mail(6, "ann@example.org", "RE: [MD- 1 ] Orca")
    settle(6)
    ticket_of = dict(d.query("select message_id, ticket_id from message where direction = 'in'"))
    assert ticket_of == {"m1@example.org": 1, "m2@example.org": 2, "m3@example.org": 1,
                         "m4@example.org": 1, "m5@example.org": 1, "m6@example.org": 1}
    people = {r[0] for r in d.query("select address from participant")}
    assert "list@lists.test" not in people  # a distribution list is never a participant
    shown = json.loads(maildesk_cli(d.env, "show", "MD-1", "--json").stdout)
    reasons = [e["detail"] for e in shown["events"] if e["kind"] == "thread"]
    assert any("In-Reply-To <m2@example.org> via linked MD-2" in r for r in reasons), reasons
