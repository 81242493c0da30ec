"""Which of our template languages a customer wrote in (pure)."""

from __future__ import annotations

import py3langid as langid

SUPPORTED = ("en", "ru")
_MIN_LETTERS = 12


def guess_language(text: str) -> str | None:
    """'en' or 'ru' when the text is clearly one of them, else None.

    py3langid scores ~100 languages, so Ukrainian or German text is not
    forced into English or Russian.
    """
    sample = text[:800]
    if sum(map(str.isalpha, sample)) < _MIN_LETTERS:
        return None
    lang, _score = langid.classify(sample)
    return lang if lang in SUPPORTED else None
