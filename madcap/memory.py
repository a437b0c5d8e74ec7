"""madcapd's cyclic-collector policy: no full collection while leases are being granted.

A full collection stalls the loop for as long as it takes to scan what is not frozen:
``settle_memory`` every 10,000 ACKs cost 20-160 ms at 3,000-8,000 exchanges/s, and
every exchange that arrived meanwhile waited for it (p99 35 ms at 3,000/s). Freezing
costs nothing (the generations' lists are spliced onto the permanent one), so while
ACKs are going out what survived the young collections is frozen every tick, and the
automatic collections only ever see the last tick's objects. The exchange path makes
no reference cycles (a full collection after 100,000 exchanges found none), so what
freezing without a collection keeps alive is what a rare cycle elsewhere (an API
request, a task) left in the oldest generation during a burst. Once the ACKs stop,
``settle`` (a full collection of what is not frozen, then freeze and trim) runs.

The automatic full collections come ten times less often than Python's default
(``install``): with the tick's freeze each scans at most a tick's objects, but at
8,000 exchanges/s that is ~30 ms, and by default one came every few seconds.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

from sapd.plumbing.service import settle_memory

FULL_AFTER = 100  # middle-generation collections per automatic full one (default 10)


@dataclass
class CollectorPolicy:
    """Fed the count of ACKs sent once a tick (``note``)."""

    acks: int  # at the last tick
    settle: Callable[[], None] = settle_memory  # a full collection, freeze, trim
    freeze: Callable[[], None] = gc.freeze
    settled_at: int = field(init=False)  # the ACK count at the last settle

    def __post_init__(self) -> None:
        self.settled_at = self.acks

    @staticmethod
    def install() -> None:
        """An automatic full collection after 100 middle ones, not 10 (process-wide)."""
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_AFTER)

    def note(self, acks: int) -> None:
        if acks != self.acks:
            self.freeze()  # busy: out of the collector's way, no scan
        elif acks != self.settled_at:
            self.settled_at = acks
            self.settle()  # the burst is over: collect once, trim
        self.acks = acks
