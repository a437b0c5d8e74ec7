"""Memory settling: when the daemons give memory back."""

from __future__ import annotations

from sapd.plumbing.service import MemorySettler


def test_settles_every_so_many_records_and_once_when_a_burst_ends() -> None:
    settled: list[int] = []
    counts = iter(range(10**6))
    settler = MemorySettler(0, every=100, settle=lambda: settled.append(next(counts)))
    for count in (40, 99, 100, 150, 150, 150):  # a burst: 100, then it ends at 150
        settler.note(count)
    assert settled == [0, 1]
    settler.note(155)
    settler.note(155)  # ended, but only 5 records since the last settle: not worth it
    settler.note(170, idle=False)
    settler.note(170, idle=False)  # the count stopped but the caller is still busy
    assert settled == [0, 1]
    settler.note(170)
    assert settled == [0, 1, 2]
