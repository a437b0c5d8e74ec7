"""The RFC 2974 scheduler with a fake clock: formula, jitter bounds, reconsideration."""

from __future__ import annotations

import random

import pytest

from sapd.announce.schedule import Scheduler


def sched(load: dict[str, tuple[int, int]] | None = None, floor: float = 30.0,
          bandwidth: float = 4000.0, seed: int = 1) -> Scheduler:
    loads = load if load is not None else {}
    return Scheduler(floor=floor, bandwidth=bandwidth, rng=random.Random(seed),
                     group_load=lambda g: loads.get(g, (0, 0)))


@pytest.mark.parametrize(("count", "size", "bandwidth", "floor", "expected"), [
    (1, 500, 4000, 300, 300.0),          # the floor wins for a quiet group
    (1000, 500, 4000, 300, 1000.0),      # 8 * 1000 * 500 / 4000
    (400, 1000, 4000, 30, 800.0),
    (100, 500, 4000, 30, 100.0),
    (100, 500, 10000, 30, 40.0),         # more bandwidth, shorter interval
    (10, 500, 4000, 30, 30.0),
])
def test_interval_formula(count: int, size: int, bandwidth: float, floor: float,
                          expected: float) -> None:
    s = sched({"g": (count, count * size)}, floor=floor, bandwidth=bandwidth)
    assert s.interval("g") == pytest.approx(expected)


def test_first_send_is_immediate_then_jittered_within_a_third() -> None:
    s = sched({"g": (1000, 500_000)})  # interval 1000 s
    s.add("a", "g", 500, now=0.0)
    assert s.due(0.0) == [("a", False)]
    gaps = []
    now = 0.0
    for _ in range(300):
        wake = s.next_wakeup()
        assert wake is not None
        gaps.append(wake - now)
        now = wake
        assert s.due(now) == [("a", False)]
    assert min(gaps) >= 1000 * 2 / 3 - 1e-6 and max(gaps) <= 1000 * 4 / 3 + 1e-6
    assert min(gaps) < 800 and max(gaps) > 1200  # the jitter really spreads


def test_reconsideration_when_the_group_grows() -> None:
    load = {"g": (10, 5000)}  # interval = floor 30
    s = sched(load)
    s.add("a", "g", 500, now=0.0)
    s.due(0.0)
    wake = s.next_wakeup()
    assert wake is not None and 20 <= wake <= 40
    load["g"] = (1000, 500_000)  # the group grew: interval 1000 s
    assert s.due(wake) == []  # recomputed time not reached: no send
    later = s.next_wakeup()
    assert later is not None and later >= 1000 * 2 / 3
    assert s.due(later) == [("a", False)]


def test_fixed_interval_overrides_formula() -> None:
    s = sched({"g": (1000, 500_000)})
    s.add("a", "g", 500, now=0.0, interval=5.0)
    s.due(0.0)
    wake = s.next_wakeup()
    assert wake is not None and 5 * 2 / 3 <= wake <= 5 * 4 / 3


def test_deletion_burst_then_gone() -> None:
    s = sched()
    s.add("a", "g", 500, now=0.0)
    s.due(0.0)
    s.delete("a", 10.0)
    sent = []
    now = 10.0
    while (wake := s.next_wakeup()) is not None:
        now = wake
        sent += s.due(now)
    assert sent == [("a", True)] * 3 and now == pytest.approx(10.0 + 2 * 0.7)
    assert len(s) == 0


def test_thousand_sessions_spread_not_bursty() -> None:
    s = sched(floor=30.0)
    for i in range(1000):
        s.add(f"k{i}", "g", 500, now=0.0)
    assert len(s.due(0.0)) == 1000  # each goes out promptly once
    seconds: dict[int, int] = {}
    now = 0.0
    while (wake := s.next_wakeup()) is not None and wake < 100:
        now = wake
        for _ in s.due(now):
            seconds[int(now)] = seconds.get(int(now), 0) + 1
    assert max(seconds.values()) < 120  # ~33/s on average, no synchronised burst
