"""Spam scoring for inbound mail: Robinson-Fisher (chi-square) combining over mail-aware tokens.

The names load lazily (PEP 562), so `maildesk --help` and every non-spam
command start without importing scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maildesk.spam.model import SpamFilter, SpamModelError, SpamThresholds, SpamVerdict
    from maildesk.spam.tokenize import TOKENIZER_VERSION

__all__ = [
    "TOKENIZER_VERSION",
    "SpamFilter",
    "SpamModelError",
    "SpamThresholds",
    "SpamVerdict",
]


def __getattr__(name: str) -> Any:
    if name == "TOKENIZER_VERSION":
        from maildesk.spam import tokenize

        return tokenize.TOKENIZER_VERSION
    if name in __all__:
        from maildesk.spam import model

        return getattr(model, name)
    raise AttributeError(f"module 'maildesk.spam' has no attribute {name!r}")
