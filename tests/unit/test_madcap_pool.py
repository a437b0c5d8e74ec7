"""Pool bookkeeping: next-fit allocation and the cheap answer when nothing is free."""

from __future__ import annotations

from madcap.pool import DRY_MEMO, Pool, scope_from_config

SCOPE = scope_from_config({"name": "tiny", "range": "239.255.0.0/16",
                           "pool": "239.255.0.0-239.255.0.3"}, 0)
LOW = int(SCOPE.pool_start)


class CountingPool(Pool):
    """Counts busy() checks: how much of the pool a request scanned."""

    __slots__ = ("checks",)

    def __init__(self) -> None:
        super().__init__(SCOPE)
        self.checks = 0

    def busy(self, value: int, start: float, until: float, owner: bytes | None = None) -> bool:
        self.checks += 1
        return super().busy(value, start, until, owner)


def test_full_pool_refuses_without_scanning_until_something_is_freed() -> None:
    pool, avoid = CountingPool(), set[int]()
    for n, value in enumerate(pool.find(4, 0.0, 100.0, avoid)):
        pool.take(value, 0.0, 100.0, bytes([n]))
    assert pool.find(1, 1.0, 100.0, avoid) == []  # one full scan finds nothing
    pool.checks = 0
    assert pool.find(1, 1.5, 100.0, avoid) == []
    assert pool.checks == 0, "an exhausted pool was scanned again"
    pool.give_back(LOW + 2, bytes([2]))
    assert pool.find(1, 1.6, 100.0, avoid) == [LOW + 2]


def test_exhaustion_is_rechecked_after_the_memo_lapses_or_the_avoid_set_changes() -> None:
    pool, avoid = CountingPool(), set[int]()
    for n in range(4):
        pool.take(LOW + n, 0.0, 100.0, bytes([n]))
    assert pool.find(1, 1.0, 50.0, avoid) == []
    pool.checks = 0
    assert pool.find(1, 1.0 + DRY_MEMO, 50.0, avoid) == []
    assert pool.checks >= 4, "the memo outlived DRY_MEMO"  # every address looked at again
    pool.checks = 0
    assert pool.find(1, 1.0 + DRY_MEMO, 50.0, set()) == []  # another avoid set
    assert pool.checks >= 4, "a new avoid set did not trigger a scan"
