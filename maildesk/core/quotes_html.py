"""The HTML side of quote stripping: cut quotes in the HTML tree, then sanitise. Pure.

Clients mark quoted history in HTML by structure, not by `>`: Outlook puts a
`<div id="divRplyFwdMsg">` (or a bordered header div) before the history and never closes
the thread in a blockquote; Gmail wraps it in `div.gmail_quote`; Thunderbird writes
`div.moz-cite-prefix` and `blockquote type="cite"`; Apple Mail, Yandex and Mail.ru put an
attribution line before a `<blockquote>`. The relayed HTML is sanitised with nh3 (Ammonia):
basic formatting, lists, tables and links only; no scripts, styles, event handlers, classes
or images (remote images are trackers; inline cid: images are not relayed either).
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable

import nh3
from bs4 import BeautifulSoup
from bs4.element import NavigableString, PageElement, Tag

_ALLOWED_TAGS = {
    "a", "b", "strong", "i", "em", "u", "s", "p", "br", "div", "span", "ul", "ol", "li",
    "blockquote", "pre", "code", "h1", "h2", "h3", "h4", "table", "thead", "tbody", "tr",
    "td", "th", "hr", "sub", "sup",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan"}}
_DROP_WITH_CONTENT = {"script", "style", "title", "head", "template", "noscript"}
_QUOTE_CLASSES = ("gmail_quote", "gmail_quote_container", "moz-cite-prefix", "yandex_quote")
_SIGNATURE_CLASSES = ("gmail_signature", "moz-signature")
_SIGNATURE_IDS = ("Signature", "ms-outlook-mobile-signature", "AppleMailSignature")
_OUTLOOK_HEADER = re.compile(r"^\s*(From|От|Von|De)\s*:", re.IGNORECASE)
_HEADER_LABELS = re.compile(
    r"^\s*(Sent|Date|To|Cc|Subject|Отправлено|Дата|Кому|Копия|Тема|Gesendet|An|Betreff)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_BLOCKS = ["div", "p", "td", "li"]


def strip_html(
    html: str, is_attribution: Callable[[str], bool], signature: tuple[str, int] | None
) -> str | None:
    """Sanitised HTML without quoted history and signature; None when no text is left."""
    soup = BeautifulSoup(html, "html.parser")
    root: Tag = soup.body or soup
    _cut_outlook(root)
    for cls in _QUOTE_CLASSES + _SIGNATURE_CLASSES:
        for found in root.find_all(class_=cls):
            found.decompose()
    for ident in _SIGNATURE_IDS:
        for found in root.find_all(id=ident):
            found.decompose()
    _cut_blockquotes(root, is_attribution)
    if signature is not None:
        _cut_signature(root, *signature)
    cleaned = sanitise_html(str(root))
    return cleaned if _visible_text(cleaned) else None


def sanitise_html(html: str) -> str:
    """Basic formatting and links (rel=noopener); nothing that runs, styles or loads."""
    soup = BeautifulSoup(html, "html.parser")
    root = soup.body or soup
    for found in root.find_all(list(_DROP_WITH_CONTENT)):
        found.decompose()
    return nh3.clean(
        root.decode_contents(),
        tags=_ALLOWED_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()


def text_to_html(text: str) -> str:
    """The relayed text as HTML, for when the HTML part kept nothing of it."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join(
        "<p>" + "<br>".join(htmllib.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )


def _visible_text(html: str) -> bool:
    return bool(BeautifulSoup(html, "html.parser").get_text().strip())


def _cut_from(node: PageElement, root: Tag) -> None:
    """Remove a node and everything after it in document order, up to the end of root."""
    current: PageElement | None = node
    while current is not None and current is not root:
        for sibling in list(current.next_siblings):
            sibling.extract()
        current = current.parent
    node.extract()


def _cut_outlook(root: Tag) -> None:
    """Outlook's reply header and all the history after it (with the rule above it)."""
    header = root.find(id=re.compile(r"appendonsend$")) or _header_block(root)
    if header is None:
        header = root.find(id=re.compile(r"divRplyFwdMsg$"))
    if header is None:
        return
    previous = header.find_previous_sibling()
    if isinstance(previous, Tag) and previous.name == "hr":
        previous.extract()
    _cut_from(header, root)


def _header_block(root: Tag) -> Tag | None:
    """The block that starts "From: …" and is followed by two more reply headers."""
    for found in root.find_all(string=_OUTLOOK_HEADER):
        block = found.find_parent(_BLOCKS)
        if block is None or not _OUTLOOK_HEADER.match(block.get_text(" ", strip=True)):
            continue
        following = [block, *block.find_next_siblings(limit=6)]
        text = "\n".join(t.get_text("\n", strip=True) for t in following)
        if len(_HEADER_LABELS.findall(text)) >= 2:
            return block
    return None


def _cut_blockquotes(root: Tag, is_attribution: Callable[[str], bool]) -> None:
    """Every blockquote goes, with the attribution line just before it."""
    for quote in root.find_all("blockquote"):
        if quote.parent is None:  # already gone with an outer quote
            continue
        attribution = _previous_text(quote)
        if attribution is not None and is_attribution(attribution.get_text(" ", strip=True)):
            attribution.extract()
        quote.decompose()


def _previous_text(node: Tag) -> PageElement | None:
    """The nearest preceding sibling with text, skipping line breaks and whitespace."""
    for sibling in node.previous_siblings:
        if isinstance(sibling, Tag) and sibling.name == "br":
            continue
        if isinstance(sibling, NavigableString) and not sibling.strip():
            continue
        return sibling
    return None


def _cut_signature(root: Tag, marker: str, earlier: int) -> None:
    """Cut from the text node that starts the signature the plain text lost: the one after
    `earlier` nodes with the same text, which the plain text kept."""
    wanted = " ".join(marker.split())
    matches = [f for f in root.find_all(string=True) if " ".join(str(f).split()) == wanted]
    if len(matches) > earlier:
        _cut_from(matches[earlier], root)
