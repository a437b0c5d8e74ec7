"""madcapd's lease clock is steady: a step of the system clock (NTP correcting a clock two
days slow) neither ends leases early nor frees their addresses (tests/attack/
test_madcap_clock_step_double_lease.py plays the step on the running daemon)."""

from __future__ import annotations

from pathlib import Path

from madcap.store.sqlite import SqliteLeaseStore
from sapd.plumbing.clock import SteadyClock
from tests.support import FakeTime

DAY = 86_400.0


def test_wall_clock_step_forward_moved_the_sqlite_lease_clock(tmp_path: Path) -> None:
    fake = FakeTime()
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3",
                             clock=SteadyClock(fake.wall, fake.monotonic))
    before = store.now()
    fake.wall_now += 2 * DAY
    fake.monotonic_now += 3.0
    assert store.now() == before + 3.0  # elapsed time, not the step
    store.close()


def test_sqlite_lease_clock_starts_at_wall_time(tmp_path: Path) -> None:
    fake = FakeTime()
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3",
                             clock=SteadyClock(fake.wall, fake.monotonic))
    assert store.now() == fake.wall_now
    store.close()
