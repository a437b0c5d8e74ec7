"""Shared bits for benchmarks: they print figures and are run by hand (make bench)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def rate(func: Callable[[], object], seconds: float = 1.0, rounds: int = 5) -> float:
    """Median calls per second over several rounds."""
    results = []
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(100):
                func()
            count += 100
        results.append(count / elapsed)
    return statistics.median(results)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def report(name: str, value: float, unit: str, target: str = "") -> None:
    print(f"{name:58} {value:14,.3f} {unit:10} {target}")
