"""Quote stripping on real threaded replies: speed and how much of the writer's text survives.

    .venv/bin/python bench/quotes.py [--mbox ../shared/corpora/threads/blinux-list-threads.mbox]
                                     [--show N]

Every reply (a mail with In-Reply-To) of the mbox is parsed with maildesk.core.parse and stripped
by maildesk.core.quotes.strip_reply, and, as the baseline in the same run, by email-reply-parser
alone (`EmailReplyParser.parse_reply`). Printed for both:

* ms per mail, p50 and p99 (the strip call only, not parsing);
* share of own text kept: the writer's own text is the lines of the plain text that are not
  quoted (do not start with ">") and not below an attribution line ("… wrote:", "-----Original
  Message-----", a "From:" header), minus the list footer (Mailman's, Google Groups'); the
  share of those lines found in the relayed text, averaged over replies;
* replies that lost any own line (a signature counts as own text here: both tools drop
  signatures on purpose, so this is an upper bound on text cut by mistake);
* the same, counting only own lines above a "-- " signature separator (or a "-name" line);
* replies in which a quoted line (">") survives.

--show N prints the lines lost from the first N replies that lost any, for a human to judge.
"""

from __future__ import annotations

import argparse
import mailbox
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from email_reply_parser import EmailReplyParser

from maildesk.core.parse import parse_mail
from maildesk.core.quotes import strip_reply

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MBOX = REPO.parent / "shared" / "corpora" / "threads" / "blinux-list-threads.mbox"

_ATTRIBUTION = re.compile(
    r"(wrote|writes|пишет|a écrit)\s*:\s*$|\b(schrieb|skrev)\b.*:\s*$|@[^\s>]+>\s*:\s*$"
    r"|^\s*-{2,}\s*(Original|Forwarded) Message|^\s*From:\s",
    re.IGNORECASE,
)
_FOOTERS = (
    "You received this message because you are subscribed",
    "To unsubscribe from this group",
    "Blinux-list mailing list",
)
_SEPARATOR = re.compile(r"^(--\s?|-- .*|-\w{1,12}|\.|_+)$")


def own_lines(text: str) -> list[str]:
    lines = text.splitlines()
    own: list[str] = []
    for i, line in enumerate(lines):
        if _ATTRIBUTION.search(line) or any(line.startswith(f) for f in _FOOTERS):
            if own and i > 0 and own[-1] == lines[i - 1].strip() and _wrapped(lines[i - 1]):
                own.pop()  # the first half of an attribution wrapped over two lines
            break
        if line.strip() and not line.startswith(">"):
            own.append(line.strip())
    while own and (own[-1] in ("--", ".") or set(own[-1]) == {"_"}):
        own.pop()  # the separator above a list footer
    return own


def above_signature(own: list[str]) -> list[str]:
    """Own lines above a "-- " style signature separator (or a "-name" sign-off)."""
    for i, line in enumerate(own):
        if _SEPARATOR.match(line):
            return own[:i]
    return own


def _wrapped(line: str) -> bool:
    """Attributions wrap after the date: a line with a digit and no sentence end."""
    return bool(re.search(r"\d", line)) and not line.rstrip().endswith((".", "!", "?", ":"))


@dataclass
class Tally:
    name: str
    times: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    lost: list[tuple[str, list[str]]] = field(default_factory=list)
    lost_text: int = 0
    quoted_left: int = 0

    def add(self, mail_id: str, own: list[str], relayed: str, seconds: float) -> None:
        self.times.append(seconds * 1000)
        kept = {line.strip() for line in relayed.splitlines()}
        missing = [line for line in own if line not in kept]
        if own:
            self.shares.append(1 - len(missing) / len(own))
        if missing:
            self.lost.append((mail_id, missing))
        if any(line not in kept for line in above_signature(own)):
            self.lost_text += 1
        if any(line.startswith(">") for line in relayed.splitlines()):
            self.quoted_left += 1

    def report(self) -> str:
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (
            f"{self.name:28} p50 {statistics.median(ordered):6.2f} ms  p99 {p99:6.2f} ms  "
            f"own text kept {100 * statistics.mean(self.shares):5.1f}%  "
            f"replies losing own lines {len(self.lost):3}/{len(self.times)} "
            f"({self.lost_text} above a '--' signature)  "
            f"with a '>' line left {self.quoted_left}"
        )


def measure(tally: Tally, strip: Callable[[str, str | None], str], text: str,
            html: str | None, mail_id: str) -> None:
    started = time.perf_counter()
    relayed = strip(text, html)
    tally.add(mail_id, own_lines(text), relayed, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbox", type=Path, default=DEFAULT_MBOX)
    parser.add_argument("--show", type=int, default=0)
    args = parser.parse_args()
    ours = Tally("maildesk.core.quotes.strip_reply")
    baseline = Tally("email-reply-parser alone")
    box = mailbox.mbox(str(args.mbox), create=False)
    for key in box.iterkeys():
        mail = parse_mail(box.get_bytes(key))
        if not mail.in_reply_to:
            continue
        mail_id = mail.message_id or str(key)
        measure(ours, lambda t, h: strip_reply(t, h).text, mail.text, mail.html, mail_id)
        measure(baseline, lambda t, _h: EmailReplyParser.parse_reply(t), mail.text, None, mail_id)
    print(f"{len(ours.times)} replies from {args.mbox.name}")
    print(ours.report())
    print(baseline.report())
    for mail_id, missing in ours.lost[: args.show]:
        print(f"\n{mail_id}: lost {len(missing)}")
        for line in missing[:8]:
            print(f"    {line[:110]}")


if __name__ == "__main__":
    main()
