"""How the daemon's processes use Python's cyclic garbage collector.

After start-up the daemon holds a few hundred thousand long-lived objects (modules,
the config snapshot, the spam and language models). `settle()` moves them out of the
collector's generations (`gc.freeze`), so a full collection no longer walks them, and
raises the young-generation threshold: a batch of mails makes many short-lived
containers, which reference counting frees; collecting every 700 allocations only
re-walks them. Cycles are still collected, less often.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # container allocations between young collections (default 700)


def settle() -> None:
    """Call once the process has loaded what it keeps for its lifetime."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
