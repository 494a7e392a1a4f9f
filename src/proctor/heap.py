"""How a long-running Proctor process keeps Python's cycle collector out of its calls.

Everything startup builds (modules, Cedar handles, the folded state of the ledger)
lives as long as the process. Left in the collector's generations, it is walked
again by every full collection, and a brokered call's short bursts of objects set
off a young collection every few calls at Python's default threshold of 700, though
almost all of those objects are freed by reference counting a moment later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Net container allocations between young collections: a call's bursts stay
below it, while objects caught in cycles still trip it and are reclaimed."""


def settle() -> None:
    """Collect once, leave what survives out of later collections, collect less often.

    Call it once startup is done, just before serving.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD)
