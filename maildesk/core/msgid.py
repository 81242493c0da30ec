"""Message-IDs as threading reads them: from a header value, with or without brackets."""

from __future__ import annotations

import re
from collections.abc import Iterable

_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_BARE_ID_RE = re.compile(r"[^\s<>()\"@,;]+@[^\s<>()\"@,;]+")
def normalise_message_id(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    found = _MSGID_RE.search(text)
    if found:
        return found.group(1)
    text = text.strip("<> \t\r\n")
    return text if text and not any(c.isspace() for c in text) else None


def message_ids(value: str) -> Iterable[str]:
    """The ids in In-Reply-To/References; bare `id@host` too when none has brackets
    (some list software and old clients write them so; Thunderbird accepts them)."""
    text = str(value)
    found = _MSGID_RE.findall(text)
    if found:
        return found
    return [t.strip(".,;") for t in text.split() if _BARE_ID_RE.fullmatch(t.strip(".,;"))]
