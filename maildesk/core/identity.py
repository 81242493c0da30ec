"""Who sent this mail: staff or customer, decided once per mail, before threading. Pure.

Staff identity is proven, never read off the From header (invariant 5):
- a reply token (maildesk.core.replytoken) in an address the mail was sent to,
  minted for this very staff member; or
- an Authentication-Results header added by a trusted MTA (its authserv-id
  configured in MAILDESK_TRUSTED_AUTHSERV_ID; only the topmost header with
  that id counts) saying dkim=pass for the From domain (header.d) or
  dmarc=pass for it (header.from), with the From address in the roster.
Anything else is a customer, whatever its From or display name claims; a
claim to a staff address without proof is flagged (`spoof`) so the admins
can be warned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import authres

from maildesk.core.parse import InboundMail
from maildesk.core.replytoken import base_address, find_token, reply_token_for
from maildesk.core.rules import RulesConfig

Role = Literal["staff", "customer"]
Via = Literal["reply_token", "dkim", "dmarc", "none"]


@dataclass(frozen=True)
class Identity:
    role: Role
    address: str  # the From addr-spec ("" when there is none)
    via: Via
    reason: str  # one line, for `maildesk show` and the events
    ticket_id: int | None = None  # the ticket a valid reply token names
    spoof: str | None = None  # a staff address claimed without proof
    comment: bool = False  # staff wrote to the comment address: a hidden note

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"


@dataclass(frozen=True)
class Trust:
    """What authorise needs: the roster, the token key, the MTAs whose verdicts count."""

    roster: RulesConfig
    key: bytes
    trusted_authserv_ids: frozenset[str] = frozenset()
    comment_address: str | None = None  # mail to it (or to comment+token@) is a hidden note


def authorise(mail: InboundMail, envelope_to: Sequence[str], trust: Trust) -> Identity:
    sender = mail.from_addr
    member = trust.roster.member(sender) if sender else None
    if member is None:
        claimed = _claimed_in_name(mail.from_name, trust.roster)
        if claimed:
            return Identity(
                "customer",
                sender,
                "none",
                f"display name claims staff address {claimed}; the address is {sender or 'none'}",
                spoof=claimed,
            )
        why = "not on the staff roster" if sender else "no usable From address"
        return Identity("customer", sender, "none", why)

    sent_to = _sent_to(mail, envelope_to)
    comment = trust.comment_address is not None and any(
        base_address(a) == trust.comment_address for a in sent_to
    )
    tokens = [t for t in map(find_token, sent_to) if t and t.kind == "t"]
    for token in tokens:
        if reply_token_for(token, sender, trust.key):
            return Identity(
                "staff",
                sender,
                "reply_token",
                f"valid reply token for ticket {token.number} minted for {sender}",
                ticket_id=token.number,
                comment=comment,
            )
    verdict = _authentication_results(mail, trust.trusted_authserv_ids)
    if verdict is not None:
        via, authserv = verdict
        why = f"{via}=pass for {_domain(sender)} by {authserv}"
        return Identity("staff", sender, via, why, comment=comment)
    if tokens:
        proof = "a reply token that is not valid for this sender and ticket"
    elif trust.trusted_authserv_ids:
        proof = "no reply token and no dkim/dmarc pass from a trusted MTA"
    else:
        proof = "no reply token (no trusted MTA configured)"
    return Identity(
        "customer", sender, "none", f"claims staff address {sender} with {proof}", spoof=sender
    )


def _sent_to(mail: InboundMail, envelope_to: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*(a.lower() for a in envelope_to if a), *mail.to, *mail.cc]))


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _claimed_in_name(name: str, roster: RulesConfig) -> str | None:
    lowered = name.lower()
    return next((s.email for s in roster.staff if s.email in lowered), None)


def _authentication_results(
    mail: InboundMail, trusted: frozenset[str]
) -> tuple[Via, str] | None:
    """dkim or dmarc pass for the From domain in the topmost header of a trusted MTA."""
    if not trusted:
        return None
    domain = _domain(mail.from_addr)
    for value in mail.header_all("authentication-results"):  # top first
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:  # malformed: not ours to trust; an MTA's own header parses
            continue
        authserv = str(header.authserv_id).lower()
        if authserv not in trusted:
            continue
        for result in header.results:
            props = {f"{p.type}.{p.name}".lower(): str(p.value).lower() for p in result.properties}
            if result.result != "pass":
                continue
            if result.method == "dkim" and props.get("header.d") == domain:
                return "dkim", authserv
            if result.method == "dmarc" and props.get("header.from") == domain:
                return "dmarc", authserv
        return None  # only the topmost header with a trusted id counts
    return None
