"""To and Cc are read by the faster stdlib parser only where it cannot part from the strict one.

``email.utils.getaddresses`` reads a long recipient list about seven times faster
than the RFC 5322 parser of ``email.headerregistry``, but reads crafted values
differently (CVE-2023-27043, and it joins atoms: ``a@b.c x`` is ``a@b.cx`` to it).
These tests hold the recipient reading to the strict parser's answer, on hostile
values by name and on generated lists.
"""

from __future__ import annotations

from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.core.address import ParsedAddresses, _plain_list, parse_addresses


def recipients(value: str) -> ParsedAddresses:
    return parse_addresses("Cc", [value], names=False)


def strict(value: str) -> ParsedAddresses:
    with patch("maildesk.core.address._plain_list", return_value=None):
        return parse_addresses("Cc", [value], names=False)


def same_reading(value: str) -> bool:
    fast, slow = recipients(value), strict(value)
    return [a for _, a in fast.addresses] == [a for _, a in slow.addresses] and (
        fast.problems == slow.problems
    )


def test_a_plain_list_of_fifty_takes_the_fast_reading() -> None:
    value = ", ".join(
        f'"Last{i}, First" <user{i}@example{i % 7}.org>' if i % 2 else f"Ann {i} <a{i}@x.org>"
        for i in range(50)
    )
    assert _plain_list(value) is not None
    assert len(recipients(value).addresses) == 50
    assert same_reading(value)


def test_hostile_values_are_read_as_the_strict_parser_reads_them() -> None:
    hostile = [
        "alice@example.org)<bob@example.org>",  # CVE-2023-27043
        "alice@example.org <bob@example.org>",  # an address as a bare display name
        '"alice@example.org" <bob@example.org>',
        "=?utf-8?q?ann@example.org?= <m@evil.test>",
        "a@b.c x",  # getaddresses would answer a@b.cx
        "a@b.c\tx, d@e.f",
        '"a@b.c"',  # an address inside a quoted string
        'a@b.c"a@b.c",',
        "é< a@b.c><_a@b.c>,",  # a trailing comma to make the counts add up
        "a@b.c,, d@e.f",
        "undisclosed-recipients:;",
        "team: a@b.c, d@e.f;",
        "a@[127.0.0.1]",
        "a\\@b@c.d",
        "x@y.z (a@b.c)",
        "ann@x.org\r\nBcc: evil@y.org",
        '"unbalanced <a@b.c>',
    ]
    for value in hostile:
        assert same_reading(value), value


def test_a_line_break_that_is_no_fold_still_refuses_the_address_after_it() -> None:
    found = recipients("ann@x.org,\nbob@y.org")
    assert [a for _, a in found.addresses] == ["ann@x.org"]
    assert found.problems


_JUNK = st.text(alphabet=list("ab .'\"<>@é\t-_x,()\\;:[]="), max_size=4)
_ADDRESS = st.sampled_from(
    ["a@b.c", "x.y@d-e.org", "é@b.c", "A@B.C", "a@b", "a..b@c.d", "-@x.y", "a@-b.c", "q@1.2.3.4"]
)
_ELEMENT = st.tuples(
    _JUNK,
    st.sampled_from(["", '"', "<", " <", '"n" <', "N <", '"N, M" <', "=?utf-8?q?x?= <"]),
    _ADDRESS,
    st.sampled_from(["", ">", '"', "> x", ">>", ">("]),
    _JUNK,
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ELEMENT, min_size=1, max_size=4).map(", ".join))
def test_generated_lists_are_read_as_the_strict_parser_reads_them(value: str) -> None:
    if any("unparseable" in problem for problem in strict(value).problems):
        # The one place the two may part: the RFC 5322 parser raises inside the stdlib
        # (a TypeError on "a@b.c, .<a@b.c") and loses the whole header, where the plain
        # reading keeps addresses written out in it.
        fast = recipients(value)
        assert all(address in value.lower() for _, address in fast.addresses)
        return
    assert same_reading(value)


def test_an_obsolete_display_name_costs_the_name_not_the_address() -> None:
    # The stdlib raises on the display name of ". <a@b.c>" (an obsolete phrase).
    found = parse_addresses("From", [". <ann@example.org>"])
    assert found.addresses == (("", "ann@example.org"),)
