"""What every whole-path fuzz test shares: how many inputs, and the per-input budget.

The default run feeds FUZZ_INPUTS inputs (100,000); `make soak` feeds 1,000,000 and the
tests print their figures. The budget is CPU time of the calling thread, so another busy
process on the machine does not make an input look slow.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INPUTS = int(os.environ.get("FUZZ_INPUTS", "100000"))
BUDGET_SECONDS = 0.010  # no single input may cost more than this


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Tally:
    """Per-input timing of one fuzz run; `slowest` names the input that cost most."""

    inputs: int = 0
    slowest_seconds: float = 0.0
    slowest: bytes = b""
    outcomes: dict[str, int] = field(default_factory=dict)

    def run(self, data: bytes, call: Callable[[], str]) -> str:
        """Run one input; `call` returns a name for what became of it."""
        start = time.thread_time()
        outcome = call()
        spent = time.thread_time() - start
        self.inputs += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if spent > self.slowest_seconds:
            self.slowest_seconds, self.slowest = spent, data
        return outcome

    def report(self, what: str) -> str:
        return (f"{what}: {self.inputs} inputs, slowest {self.slowest_seconds * 1000:.2f} ms "
                f"CPU, outcomes {dict(sorted(self.outcomes.items()))}, "
                f"peak RSS {rss_mb():.0f} MB")
