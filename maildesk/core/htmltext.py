"""HTML -> the plain text a reader sees: pure, never raises.

The text of an HTML-only mail, and what the spam tokenizer reads of it.
libxml2's lenient HTML parser (through lxml) builds the tree; this module
only decides what of the tree is text:

* block elements (``p``, ``div``, ``br``, ``li``, ``tr``, ``h1``-``h4``,
  ``blockquote``) start a new line; other tags join their text as written
  (``<b>Ch</b>eap`` is "Cheap");
* ``script``, ``style`` and ``head`` (so ``title``) give nothing, nor do
  comments and processing instructions; the text after them is kept;
* character references are decoded (``&nbsp;`` is a space once collapsed);
* runs of whitespace become one space, blank lines go, the ends are trimmed.

Text hidden by CSS (``display:none``) is kept: the tokenizer marks the trick
itself from the markup.

The parser never reaches the network (``no_network``), never decompresses
(``decompress``), keeps libxml2's limits on depth and text size
(``huge_tree=False``), and, being libxml2's HTML parser, reads no DTD and
expands no declared entity: only HTML's own named and numeric references.
Where libxml2 gives up part of a document (deeper than its 256 levels, a
text node over its 10 MB limit) or lxml refuses the input, the standard
library's ``html.parser`` reads the document instead, as before lxml: text
is never lost to the limits.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from lxml import etree

BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})
SILENT_TAGS = frozenset({"script", "style", "head"})
# libxml2 builds nothing after the first </html>; a mail's HTML is often several documents
# (parse joins its HTML parts) or a list footer after the end tag. Without the end tags the
# later documents' heads and bodies become siblings in one tree, and their text is kept.
_HTML_END = re.compile(r"</html\b[^>]*>", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, one line per block; "" when it has none."""
    text = _lxml_text(html)
    return collapse_whitespace(text if text is not None else stdlib_text(html))


def collapse_whitespace(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line).strip()


def _lxml_text(html: str) -> str | None:
    """The text with block line breaks, not yet collapsed; None where lxml cannot be trusted."""
    parser = etree.HTMLParser(  # one per call: a parser is a parse's state and its error log
        encoding="utf-8",  # the str is decoded already: a <meta charset> must not re-decode it
        no_network=True,
        decompress=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
        default_doctype=False,
    )
    try:
        root = etree.fromstring(_HTML_END.sub("", html).encode("utf-8", "surrogatepass"), parser)
    except (etree.LxmlError, ValueError):
        return None
    if any(error.level >= etree.ErrorLevels.FATAL for error in parser.error_log):
        return None  # a resource limit cut the document short
    if root is None:
        return ""  # empty, blank, only comments or a doctype
    return _tree_text(root)


def _tree_text(root: etree._Element) -> str:
    # Read, never written: lxml refuses to set text with the control characters libxml2 keeps.
    chunks: list[str] = []
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        if event == "end":
            if element.tail:
                chunks.append(element.tail)
        elif element.tag in SILENT_TAGS:
            walker.skip_subtree()  # its end event still comes, with the tail
        else:
            if element.tag in BLOCK_TAGS:
                chunks.append("\n")
            if element.text:
                chunks.append(element.text)
    return "".join(chunks)


def stdlib_text(html: str) -> str:
    """The text as the standard library's tokenizer reads it (the path before lxml)."""
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:  # html.parser has raised on broken declarations in the past
        return re.sub(r"<[^>]*>", " ", html)
    return "".join(extractor.chunks)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SILENT_TAGS:
            self._skip += 1
        elif tag in BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SILENT_TAGS and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)
