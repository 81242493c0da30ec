"""Quote and signature stripping for staff replies relayed to customers. Pure: no IO, no clock.

The plain text goes through a rule layer first (attributions and reply headers of the
clients our users write with, in Russian, English and German; `>` quotes; signatures),
then through email-reply-parser, whose cut is taken only when it removes a short tail
(its header rule otherwise hides everything below a line such as "To: ..." in the
writer's own text). HTML quotes are cut in the HTML tree (see maildesk.core.quotes_html).
When stripping leaves nothing, or only a greeting, the reply is relayed whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from email_reply_parser import EmailReplyParser

from maildesk.core.quotes_html import sanitise_html, strip_html, text_to_html


@dataclass(frozen=True)
class StrippedReply:
    text: str  # what is relayed: the writer's own new text, quotes and signature removed
    html: str | None  # sanitised HTML of the same new text (None when the mail had no HTML part)
    removed_lines: int  # how many lines of the plain text were removed
    whole: bool  # True when stripping left nothing (or only a greeting): relayed whole


class _Kind(Enum):
    OWN = "own"
    QUOTE = "quote"


_QUOTED = re.compile(r"^\s*>")
_ADDRESS = r"<?[^\s<>@\"]+@[^\s<>@\"]+>?"
# "On <date>, <name> wrote:" (Gmail, Apple Mail, Thunderbird en, mutt), German "Am … schrieb …:".
_ON_WROTE = re.compile(r"^\s*(On|Le)\s.{4,300}\b(wrote|a écrit)\s*:\s*$", re.IGNORECASE)
_AM_SCHRIEB = re.compile(r"^\s*Am\s.{4,300}\bschrieb\b.{0,200}:\s*$")
# A date or a time on the line: "23.11.2026", "2026-11-23", "23 нояб. 2026", "10:00".
_DATEISH = re.compile(
    r"\b(\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}|(19|20)\d{2}|\d{1,2}:\d{2})\b"
)
# "23.11.2026 10:00, Иван пишет:" (Thunderbird ru), "Ann writes:" (Gnus); Gmail ru and Yandex:
# "пн, 23 нояб. 2026 г. в 10:00, Иван <ivan@example.ru>:", "23.11.2026, 10:00, "Иван" <…>:".
_VERB_END = re.compile(
    r"\b(пишет|писал[аи]?|написал[аи]?|написал\(а\)|wrote|writes|schrieb|a écrit|skrev"
    r"|napisał(\(a\)|a)?)\s*:\s*$",
    re.IGNORECASE,
)
_FULL_DATE = re.compile(r"\b(\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}|(19|20)\d{2})\b")
_TIME = re.compile(r"\b\d{1,2}:\d{2}\b")
# The first half of an attribution wrapped over two lines: "On …", "Am …", or a date.
_ATTRIBUTION_START = re.compile(r"^\s*(On|Am|Le|Den)\s|.*" + _DATEISH.pattern)
_ADDRESS_END = re.compile(_ADDRESS + r"\s*:\s*$")
# Reply headers (Outlook, Exchange, The Bat!, Mail.ru): a From line, then two of these.
_HEADER_FROM = re.compile(r"^\s*\*?(From|От|Von|De|Отправитель)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|To|Cc|Subject|Отправлено|Дата|Кому|Копия|Тема|Gesendet|An|Betreff)"
    r"\s*:\*?(\s|$)",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(
    r"^\s*(_{10,}|-{3,}\s*(Original Message|Исходное сообщение|Ursprüngliche Nachricht)"
    r"\s*-{3,})\s*$",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"^\s*(--\s?|—|((best|kind|warm|warmest|many)\s+)?regards|cheers|sincerely|yours truly"
    r"|с уважением|с наилучшими пожеланиями|всего (доброго|хорошего)|mit freundlichen grüßen"
    r"|viele grüße|beste grüße)\s*[,.!]?\s*$",
    re.IGNORECASE,
)
_DEVICE = re.compile(
    r"^\s*(sent (from|with|using) .{1,40}|get outlook for \w+|"
    r"отправлено (с|со|из) .{1,40}|von meinem \w+ gesendet)\s*$",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|dear|good (morning|afternoon|evening)|здравствуй(те)?|привет"
    r"|добр(ый|ое|ого) (день|вечер|утро|дня|времени)( суток)?|доброе утро|уважаем\w*|hallo"
    r"|guten tag)\b,?(\s+[\w.\-]+){0,3}\s*[,!.:]?\s*$",  # and a name at most
    re.IGNORECASE,
)
_SIG_TAIL_LINES = 6  # a signature is a few short lines ...
_SIG_LINE_CHARS = 80  # ... each no longer than this
_PARSER_TAIL_LINES = 40  # what email-reply-parser sees: the end of the text, bounded
_PARSER_TAIL_CHARS = 4000
_PARSER_MAX_ON = 40


def strip_reply(text: str, html: str | None) -> StrippedReply:
    """The writer's own new text of a reply, without quoted history and signature."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kinds = _mark_quotes(lines)
    own = [i for i, kind in enumerate(kinds) if kind is _Kind.OWN]
    unsigned = _after_reply_parser(lines, _without_signature(lines, own))
    kept = _tidy([lines[i] for i in unsigned])
    if _only_greeting(kept):
        return StrippedReply(
            text=text.strip(),
            html=sanitise_html(html) if html is not None else None,
            removed_lines=0,
            whole=True,
        )
    relayed = "\n".join(kept)
    return StrippedReply(
        text=relayed,
        html=_relayed_html(html, relayed, _signature_start(lines, own, unsigned)),
        removed_lines=_count(lines) - _count(kept),
        whole=False,
    )


def _relayed_html(
    html: str | None, relayed: str, signature: tuple[str, int] | None
) -> str | None:
    if html is None:
        return None
    stripped = strip_html(html, _attribution_line, signature)
    return stripped if stripped is not None else text_to_html(relayed)


def _signature_start(lines: list[str], own: list[int], kept: list[int]) -> tuple[str, int] | None:
    """The first line of the signature cut from the text, and how often it occurs above it
    (so that the HTML is cut at the same "--", not at an earlier one the text kept)."""
    last = kept[-1] if kept else -1
    cut = [i for i in own if i > last and lines[i].strip()]
    if not cut:
        return None
    marker = lines[cut[0]].strip()
    return marker, sum(1 for i in kept if lines[i].strip() == marker)


# --- quotes -------------------------------------------------------------------------


def _mark_quotes(lines: list[str]) -> list[_Kind]:
    kinds = [_Kind.QUOTE if _QUOTED.match(line) else _Kind.OWN for line in lines]
    i = 0
    while i < len(lines):
        span = _attribution_span(lines, i)
        if span == 0 or kinds[i] is _Kind.QUOTE:
            i += 1
            continue
        start = _separator_before(lines, i)
        if _next_is_quoted(lines, i + span):
            _mark(kinds, start, i + span)  # bottom-posted or interleaved: only the header goes
            i += span
            continue
        if not _strong_attribution(lines, i, span):
            i += 1
            continue
        _mark(kinds, start, len(lines))  # history without `>` marks: all of it goes
        break
    _mark_lone_separators(lines, kinds)
    return kinds


def _mark(kinds: list[_Kind], start: int, end: int) -> None:
    for j in range(start, end):
        kinds[j] = _Kind.QUOTE


def _mark_lone_separators(lines: list[str], kinds: list[_Kind]) -> None:
    """ "-----Original Message-----" with no header block after it: the rest is history."""
    for i, line in enumerate(lines):
        if kinds[i] is _Kind.OWN and _SEPARATOR.match(line) and "_" not in line:
            _mark(kinds, i, len(lines))
            return


def _attribution_span(lines: list[str], i: int) -> int:
    """How many lines the attribution or reply header starting at line i takes (0: none)."""
    if _HEADER_FROM.match(lines[i]):
        return _header_block(lines, i)
    if _attribution_line(lines[i]):
        return 1
    if i + 1 < len(lines) and lines[i].strip() and lines[i + 1].strip():
        if _QUOTED.match(lines[i + 1]) or not _ATTRIBUTION_START.match(lines[i]):
            return 0  # "Ann" right above "Bob <b@example.com> writes:" is Ann's name
        joined = lines[i].rstrip() + " " + lines[i + 1].strip()
        if len(joined) < 300 and _attribution_line(joined):
            return 2  # wrapped over two lines, as Gmail does past ~76 characters
    return 0


def _attribution_line(line: str) -> bool:
    if _QUOTED.match(line) or len(line) > 300:
        return False
    if _ON_WROTE.match(line) or _AM_SCHRIEB.match(line):
        return True
    if _VERB_END.search(line):
        return True
    return bool(_ADDRESS_END.search(line) and _DATEISH.search(line))


def _strong_attribution(lines: list[str], i: int, span: int) -> bool:
    """Strong enough to cut everything below when no `>` quote follows."""
    if _HEADER_FROM.match(lines[i]):
        return True
    line = " ".join(part.strip() for part in lines[i : i + span])
    if _ON_WROTE.match(line) or _AM_SCHRIEB.match(line):
        return True
    dated = _FULL_DATE.search(line) and _TIME.search(line)
    return bool(dated and (_ADDRESS_END.search(line) or _VERB_END.search(line)))


def _header_block(lines: list[str], i: int) -> int:
    """A From line followed, within six lines, by at least two more reply headers."""
    found = 0
    end = i + 1
    for j in range(i + 1, min(i + 7, len(lines))):
        if _HEADER_NEXT.match(lines[j]):
            found += 1
            end = j + 1
        elif not lines[j].strip():
            break
    return end - i if found >= 2 else 0


def _separator_before(lines: list[str], i: int) -> int:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j if j >= 0 and _SEPARATOR.match(lines[j]) else i


def _next_is_quoted(lines: list[str], start: int) -> bool:
    for line in lines[start:]:
        if line.strip():
            return bool(_QUOTED.match(line))
    return False


# --- signatures ---------------------------------------------------------------------


def _without_signature(lines: list[str], own: list[int]) -> list[int]:
    """Cut from the first signature marker that starts a short tail, never most of the text."""
    for pos, index in enumerate(own):
        line = lines[index]
        if not (_SIGN_OFF.match(line) or _DEVICE.match(line)):
            continue
        before = [lines[i] for i in own[:pos] if lines[i].strip()]
        tail = [lines[i] for i in own[pos + 1 :] if lines[i].strip()]
        short = len(tail) <= _SIG_TAIL_LINES and all(len(t) <= _SIG_LINE_CHARS for t in tail)
        if short and len(tail) + 1 <= max(4, len(before)):
            return own[:pos]
    return own


def _after_reply_parser(lines: list[str], own: list[int]) -> list[int]:
    """email-reply-parser's cut, taken only when it removes a short tail of the kept text.

    Only the last lines go in: its multi-line "On … wrote:" pattern takes time cubic in the
    number of "On" in the text (a 1,000-line mail takes about a minute), and a cut we would
    take is at most a few lines from the end anyway."""
    tail = own[-_PARSER_TAIL_LINES:]
    text = "\n".join(lines[i] for i in tail)
    if len(text) > _PARSER_TAIL_CHARS or text.count("On") > _PARSER_MAX_ON:
        return own
    kept = [line.strip() for line in EmailReplyParser.parse_reply(text).split("\n")]
    kept = [line for line in kept if line]
    ours = [i for i in tail if lines[i].strip()]
    if not kept or len(kept) >= len(ours):
        return own
    if [lines[i].strip() for i in ours[: len(kept)]] != kept:
        return own  # not a plain tail cut
    dropped = len(ours) - len(kept)
    if dropped > _SIG_TAIL_LINES or dropped * 2 > _count([lines[i] for i in own]):
        return own
    last = ours[len(kept) - 1]
    return [i for i in own if i <= last]


# --- result -------------------------------------------------------------------------


def _tidy(lines: list[str]) -> list[str]:
    """Trailing spaces off, no blank lines at either end, runs of blank lines as one."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _count(lines: list[str]) -> int:
    """Lines that say something: blank lines are layout, not text."""
    return sum(1 for line in lines if line.strip())


def _only_greeting(kept: list[str]) -> bool:
    return all(_GREETING.match(line) for line in kept if line.strip())
