"""A daemon's one clock: wall time as of its start, advanced by the monotonic clock.

In-process deadlines (expiry, the announce schedule, rate-limit windows) are read from
it, so a step of the system clock (NTP correcting a board without a battery clock, an
operator's ``date -s``) neither expires every session at once nor fires every
announcement: elapsed time is what the monotonic clock says. What is stored or compared
across hosts (first and last seen, expiry, event times) is dated in wall time again by
the hub (sapd.hub.Hub._to_wall_time), from the steps :meth:`SteadyClock.drift` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOCK_STEP_WARNING = 2.0  # seconds the system clock may be stepped before a warning


@dataclass(slots=True)
class SteadyClock:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    offset: float = field(init=False)  # wall time at start minus monotonic time at start

    def __post_init__(self) -> None:
        self.offset = self.wall() - self.monotonic()

    def now(self) -> float:
        return self.monotonic() + self.offset

    def drift(self) -> float:
        """Seconds the system clock has been stepped since start (positive: forward)."""
        return self.wall() - self.now()
