"""The fuzz tests' per-input budget (tests/fuzz/budget.py): one noisy timing of an input
is timed again before it fails a run; a truly slow input still fails it."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.fuzz import budget


def burn(seconds: float) -> str:
    """Spend ``seconds`` of this thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass
    return "burnt"


def test_an_input_over_budget_once_is_judged_by_its_retiming() -> None:
    tally = budget.Tally()
    tally.run(b"noisy", lambda: burn(1.5 * budget.BUDGET_SECONDS), retime=lambda: 0.0002)
    tally.run(b"cheap", lambda: "fast")
    assert tally.slowest_seconds < budget.BUDGET_SECONDS
    [(data, first, again)] = tally.over_budget
    assert data == b"noisy" and first > budget.BUDGET_SECONDS and again == 0.0002
    assert tally.outcomes == {"burnt": 1, "fast": 1}


def test_an_input_over_budget_every_time_is_the_slowest() -> None:
    tally = budget.Tally()
    slow = 1.5 * budget.BUDGET_SECONDS
    tally.run(b"slow", lambda: burn(slow),
              retime=lambda: budget.retimed(lambda: lambda: burn(slow), repeats=2))
    assert tally.slowest == b"slow" and tally.slowest_seconds >= slow


def test_retimed_times_the_call_not_its_setup() -> None:
    def prepare() -> Callable[[], object]:
        burn(0.02)  # building the fresh state: not the input's cost
        return lambda: None
    assert budget.retimed(prepare, repeats=2) < 0.005
