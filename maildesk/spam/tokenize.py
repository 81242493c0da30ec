"""InboundMail -> the tokens the spam model counts. Pure, deterministic, fast.

Designed after SpamBayes' tokenizer and bogofilter's lexer, with the lessons
of public corpora in mind (a filter that leans on collection artefacts is
perfect in cross-validation and useless on live mail):

* Words of the subject (prefixed ``s:``) and the body: Unicode letters, so
  Cyrillic and accented text are words; CJK runs become character bigrams.
  Words of 3..20 characters are kept lowercased; longer runs become a
  ``skip:<first char>:<length bucket>`` token, as SpamBayes does.
* URL hosts (``url:`` host and its parent domains, ``url:ip`` for numeric
  hosts), mail domains in the body, and a few HTML markers (``html:only``,
  tags such as ``<font>``/``<img>``/``<form>``, hidden text tricks).
* One ``script:<name>`` marker per writing system with at least
  ``SCRIPT_MARK_WORDS`` words in the mail (``script:latin``,
  ``script:cyrillic``, ...). They carry no evidence themselves; the model
  counts them to know which scripts it has seen in both ham and spam, and
  ignores the words of a script it has not (see ``model.py``).
* Header clues that describe the *sender's software and envelope*: From
  domain and TLD, Reply-To pointing elsewhere, X-Mailer family, charset,
  Content-Type, attachment types and extensions.

Left out on purpose: Date, Received, Message-ID, To/Cc and Return-Path
(they record when and where a corpus was collected, not what the mail is);
List-*, X-Beenthere, Precedence, Mailman/Yahoo!/SourceForge list footers and
``[list]`` subject tags (nearly all ham of a public corpus is list mail, which
would teach "list mail = ham"); any token naming ``spamassassin.taint.org``,
the corpus' address rewriting. Existing ``X-Spam-*`` verdicts are ignored too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from maildesk.core.parse import InboundMail, html_to_text

TOKENIZER_VERSION = 2  # 2: script markers

SCRIPT_PREFIX = "script:"
SCRIPT_MARK_WORDS = 3
# Token prefixes of words (everything else is a header, link or structure clue).
_WORD_PREFIXES = ("s:", "skip:")

_MIN_WORD, _MAX_WORD = 3, 20
_MAX_BODY_CHARS = 4_000  # enough to judge; bounds the work (p99 < 2 ms) on huge mails
_MAX_HTML_CHARS = 8_000

# A word does not end in . - ' ’ (the regex backtracks to its last other character).
_WORD = re.compile(r"[$€£]?[^\W_](?:[\w'’.$€£%-]*[\w$€£%])?")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]{2,}")
_URL = re.compile(r"(?:https?|ftp)://([^\s/:?#\"'<>]+)|www\.([^\s/:?#\"'<>]+)")  # lowercased text
_URL_TEXT = re.compile(r"(?i)\b(?:(?:https?|ftp)://|www\.)\S+")
_EMAIL_DOMAIN = re.compile(r"@((?:[a-z0-9-]+\.)+[a-z]{2,})\b")  # lowercased text
_IP = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_SUBJECT_TAG = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg|sv|ha)\s*:\s*|\[[^\]]{1,40}\]\s*)+", re.I)
_SEPARATOR = re.compile(r"^(?:[-_=~*]{10,}.*|-- ?)$", re.M)
# Searched in lowercased text: with IGNORECASE the search takes ten times as long.
_LIST_FOOTER = re.compile(
    r"mailing list|listinfo|list maintainer|sponsored by|yahoo! groups|"
    r"mailman|un-?subscri\w+ from this group|\(un\)subscription"
)
# Both run over lowercased HTML.
_HTML_TAGS = re.compile(r"<\s*(font|form|input|script|iframe)\b")
_HIDDEN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01]px")
_HTML_ONLY_TYPES = frozenset({"text/html", "multipart/related"})
_TAINT = "taint.org"
_MAX_FOOTER_CHARS = 2_500


def tokenize(mail: InboundMail) -> list[str]:
    """All tokens of one mail, duplicates removed, order of first appearance."""
    return [t for t in dict.fromkeys(_tokens(mail)) if _TAINT not in t]


def script_of(token: str) -> str | None:
    """The writing system of a word token; "common" for digits and money; None if not a word.

    Structure tokens such as ``s:ALLCAPS`` answer "latin": callers treat them first.
    """
    if token.isascii():  # the common case, answered without a loop
        if ":" in token and not token.startswith(_WORD_PREFIXES):
            return None
        first = token[token.index(":") + 1] if ":" in token else token[0]
        return "latin" if first.isalpha() else "common"
    word = token
    for prefix in _WORD_PREFIXES:
        if word.startswith(prefix):
            word = word[len(prefix) :]
            break
    else:
        if ":" in token:
            return None
    if not word:
        return None
    first = word[0]
    if first.isascii():
        return "latin" if first.isalpha() else "common"
    code = ord(first)
    if code < 0x250 or 0x1E00 <= code < 0x1F00:
        return "latin" if first.isalpha() else "common"
    for start, end, name in _SCRIPT_RANGES:
        if start <= code < end:
            return name
    return "common" if not first.isalpha() else "other"


_SCRIPT_RANGES = (
    (0x0370, 0x0400, "greek"),
    (0x0400, 0x0530, "cyrillic"),
    (0x0530, 0x0590, "armenian"),
    (0x0590, 0x0600, "hebrew"),
    (0x0600, 0x0780, "arabic"),
    (0x0900, 0x0E00, "indic"),
    (0x0E00, 0x0E80, "thai"),
    (0x10A0, 0x1100, "georgian"),
    (0x1100, 0x1200, "cjk"),
    (0x3040, 0xA000, "cjk"),
    (0xAC00, 0xD7B0, "cjk"),
)


def _script_marks(words: list[str], ascii_text: bool) -> Iterator[str]:
    """Markers of the scripts with at least ``SCRIPT_MARK_WORDS`` words, in the order of
    their first word. ``ascii_text``: the words come from ASCII text, so the only script
    is Latin (a word starting with a letter), and counting stops at the mark."""
    if ascii_text:
        latin = 0
        for word in words:
            if (word[5] if word.startswith("skip:") else word[0]).isalpha():
                latin += 1
                if latin == SCRIPT_MARK_WORDS:
                    yield SCRIPT_PREFIX + "latin"
                    return
        return
    counts: dict[str, int] = {}
    for word in words:
        script = script_of(word)
        if script and script != "common":
            counts[script] = counts.get(script, 0) + 1
    for script, count in counts.items():
        if count >= SCRIPT_MARK_WORDS:
            yield SCRIPT_PREFIX + script


def _tokens(mail: InboundMail) -> Iterator[str]:
    subject = _SUBJECT_TAG.sub("", mail.subject)
    subject_words = _words(subject)
    yield from ("s:" + w for w in subject_words)
    if subject and subject == subject.upper() and any(c.isalpha() for c in subject):
        yield "s:ALLCAPS"
    if "!" in subject:
        yield "s:bang"
    yield from _header_tokens(mail)
    body = _body_text(mail)
    # A list footer sits at the end: a long body loses it to the cut anyway.
    body = body[:_MAX_BODY_CHARS] if len(body) > _MAX_BODY_CHARS else strip_list_footer(body)
    # URLs become host tokens below, not words: "http"/"https"/"www" only tell the year.
    body_words = _words(_URL_TEXT.sub(" ", body))
    yield from body_words
    yield from _script_marks(subject_words + body_words, subject.isascii() and body.isascii())
    html = mail.html[:_MAX_HTML_CHARS].lower() if mail.html else ""
    yield from _link_tokens(body.lower() + "\n" + html)
    if html:
        yield from _html_tokens(mail, html)
    yield from _attachment_tokens(mail)


def _words(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    if not text.isascii() and _CJK.search(text):
        return [t for w in words for t in (_cjk_bigrams(w) if _CJK.search(w) else _word(w))]
    return [
        w if len(w) <= _MAX_WORD else f"skip:{w[0]}:{len(w) // 10 * 10}"
        for w in words
        if len(w) >= _MIN_WORD
    ]


def _word(word: str) -> list[str]:
    if len(word) < _MIN_WORD:
        return []
    return [word if len(word) <= _MAX_WORD else f"skip:{word[0]}:{len(word) // 10 * 10}"]


def _cjk_bigrams(text: str) -> list[str]:
    return [run[i : i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)]


def _body_text(mail: InboundMail) -> str:
    if mail.text:
        return mail.text
    return html_to_text(mail.html) if mail.html else ""


def strip_list_footer(text: str) -> str:
    """Cut the footer a mailing list appends (Mailman, Yahoo! Groups, SourceForge ads).

    The cut starts at the first separator line (dashes, underscores, ``-- ``)
    whose remainder is short and names a list; a signature without list
    words is kept.
    """
    start = max(0, len(text) - _MAX_FOOTER_CHARS)  # a longer tail is not a footer
    if not _LIST_FOOTER.search(text[start:].lower()):
        return text  # the common case, found without looking for separators
    for match in _SEPARATOR.finditer(text, start):
        tail = text[match.start() :]
        if len(tail) <= _MAX_FOOTER_CHARS and _LIST_FOOTER.search(tail.lower()):
            return text[: match.start()]
    return text


def _domain_tokens(prefix: str, host: str) -> Iterator[str]:
    host = host.lower().strip(".").rstrip(">")
    if not host:
        return
    if _IP.match(host):
        yield f"{prefix}:ip"
        return
    labels = host.split(".")
    yield f"{prefix}:tld:{labels[-1]}"
    for i in range(max(0, len(labels) - 3), len(labels) - 1):
        yield f"{prefix}:" + ".".join(labels[i:])


def _header_tokens(mail: InboundMail) -> Iterator[str]:
    from_domain = mail.from_addr.rpartition("@")[2]
    if from_domain:
        yield from _domain_tokens("from", from_domain)
    else:
        yield "from:none"
    if mail.from_name:
        if "@" in mail.from_name:
            yield "from:name-is-address"
    else:
        yield "from:no-name"
    for reply_to in mail.reply_to:
        other = reply_to.rpartition("@")[2]
        if from_domain and other != from_domain:
            yield "hdr:reply-to-elsewhere"
            yield from _domain_tokens("replyto", other)
    mailer = mail.header("x-mailer") or mail.header("user-agent")
    if mailer:
        family = re.split(r"[\s/(;,]+|\bv?\d", mailer.strip().lower(), maxsplit=1)[0]
        yield f"mailer:{family[:30]}"
    else:
        yield "mailer:none"
    if mail.content_type not in _HTML_ONLY_TYPES:  # html:only says it for those
        yield f"ct:{mail.content_type}"
    charset = _charset(mail.header("content-type") or "")
    if charset:
        yield f"charset:{charset}"
    if not mail.subject:
        yield "s:empty"
    if mail.date is None:
        yield "hdr:no-valid-date"  # whether there is one, never its value
    if mail.message_id is None:
        yield "hdr:no-message-id"


def _charset(content_type: str) -> str:
    found = re.search(r"(?i)charset\s*=\s*\"?([\w.:-]+)", content_type)
    return found.group(1).lower() if found else ""


def _link_tokens(text: str) -> Iterator[str]:
    seen: set[str] = set()
    for match in _URL.finditer(text):
        host = (match.group(1) or ("www." + (match.group(2) or ""))).split("@")[-1].lower()
        if host not in seen:
            seen.add(host)
            yield from _domain_tokens("url", host)
    for match in _EMAIL_DOMAIN.finditer(text):
        yield from _domain_tokens("email", match.group(1))


def _html_tokens(mail: InboundMail, html: str) -> Iterator[str]:
    if mail.content_type in _HTML_ONLY_TYPES:  # no text/plain alternative at the top
        yield "html:only"
    for match in _HTML_TAGS.finditer(html):
        yield "html:<" + match.group(1)
    if _HIDDEN.search(html):
        yield "html:hidden-text"


def _attachment_tokens(mail: InboundMail) -> Iterator[str]:
    for attachment in mail.attachments:
        yield f"att:type:{attachment.content_type.lower()}"
        _, dot, ext = attachment.filename.rpartition(".")
        if dot and 0 < len(ext) <= 5:
            yield f"att:ext:{ext.lower()}"
