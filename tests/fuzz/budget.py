"""What every whole-path fuzz test shares: how many inputs, and the per-input budget.

The default run feeds FUZZ_INPUTS inputs (100,000); `make soak` feeds 1,000,000 and the
tests print their figures. The budget is CPU time of the calling thread, so another busy
process on the machine does not make an input look slow; and since on a shared VM one
measurement can still carry tens of ms of stolen or stalled time (41.8 ms once for a
125-byte datagram that costs 0.05 ms), an input over budget is timed again on a fresh
state and judged by its least time.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INPUTS = int(os.environ.get("FUZZ_INPUTS", "100000"))
BUDGET_SECONDS = 0.010  # no single input may cost more than this
RETIMINGS = 5  # runs of an input over budget, each on a fresh state


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def retimed(prepare: Callable[[], Callable[[], object]], repeats: int = RETIMINGS) -> float:
    """An input's own cost: its least CPU time over ``repeats`` runs, each the call that
    ``prepare`` returns on a fresh state (its setup is not timed)."""
    least = float("inf")
    for _ in range(repeats):
        call = prepare()
        start = time.thread_time()
        call()
        least = min(least, time.thread_time() - start)
    return least


@dataclass
class Tally:
    """Per-input timing of one fuzz run; `slowest` names the input that cost most.
    `over_budget` holds (input, first timing, re-timing) of those timed again."""

    inputs: int = 0
    slowest_seconds: float = 0.0
    slowest: bytes = b""
    outcomes: dict[str, int] = field(default_factory=dict)
    over_budget: list[tuple[bytes, float, float]] = field(default_factory=list)

    def run(self, data: bytes, call: Callable[[], str],
            retime: Callable[[], float] | None = None) -> str:
        """Run one input; `call` returns a name for what became of it. An input over
        budget counts by `retime`'s figure (see `retimed`), when one is given."""
        start = time.thread_time()
        outcome = call()
        spent = time.thread_time() - start
        self.inputs += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if spent > BUDGET_SECONDS and retime is not None:
            first, spent = spent, retime()
            self.over_budget.append((data, first, spent))
        if spent > self.slowest_seconds:
            self.slowest_seconds, self.slowest = spent, data
        return outcome

    def over_budget_report(self) -> str:
        if not self.over_budget:
            return "no input over budget at first timing"
        first = max(f for _, f, _ in self.over_budget)
        again = max(r for _, _, r in self.over_budget)
        return (f"{len(self.over_budget)} inputs over budget at first timing (at most "
                f"{first * 1000:.2f} ms), re-timed {again * 1000:.2f} ms at most")

    def report(self, what: str) -> str:
        return (f"{what}: {self.inputs} inputs, slowest {self.slowest_seconds * 1000:.2f} ms "
                f"CPU, outcomes {dict(sorted(self.outcomes.items()))}, "
                f"peak RSS {rss_mb():.0f} MB")
