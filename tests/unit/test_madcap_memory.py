"""madcapd's collector policy (madcap/memory.py): no full collection while busy."""

from __future__ import annotations

import gc

from madcap.memory import FULL_AFTER, CollectorPolicy


def policy() -> tuple[CollectorPolicy, list[str]]:
    done: list[str] = []
    return CollectorPolicy(0, settle=lambda: done.append("settle"),
                           freeze=lambda: done.append("freeze")), done


def test_a_busy_madcapd_runs_no_full_collection() -> None:
    # settle_memory every 10,000 ACKs stalled the loop 20-160 ms under load
    collector, done = policy()
    for acks in range(3_000, 120_000, 3_000):  # 3,000 ACKs a tick for 40 ticks
        collector.note(acks)
    assert "settle" not in done
    assert done == ["freeze"] * 39  # what survived is frozen every busy tick


def test_the_end_of_a_burst_collects_once() -> None:
    collector, done = policy()
    for acks in (500, 1_000, 1_000, 1_000, 1_000):
        collector.note(acks)
    assert done == ["freeze", "freeze", "settle"]


def test_an_idle_madcapd_does_nothing() -> None:
    collector, done = policy()
    for _ in range(5):
        collector.note(0)
    assert done == []


def test_install_makes_automatic_full_collections_rarer() -> None:
    before = gc.get_threshold()
    try:
        CollectorPolicy.install()
        assert gc.get_threshold() == (*before[:2], FULL_AFTER)
    finally:
        gc.set_threshold(*before)
