"""What every lease store must do, in the manner of Kea's generic lease-manager tests.

Each test runs against every backend in ``BACKENDS``: a new backend (PostgreSQL) is one
module in madcap/store/ and one entry in its factory; its fixture goes in ``opener``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from madcap.leases import ACTIVE, EXPIRED, RELEASED, Lease, LeaseStore, LeaseStoreError
from madcap.store import BACKENDS, open_lease_store
from madcap.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteLeaseStore

T0 = 1_800_000_000.0
GUARD = 100.0
Opener = Callable[[], LeaseStore]


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store again on every call (a restart)."""
    opened: list[LeaseStore] = []
    dsn = None
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_database").dsn

    def open_store() -> LeaseStore:
        store = open_lease_store(request.param, tmp_path, dsn=dsn)
        opened.append(store)
        return store
    request.addfinalizer(lambda: [s.close() for s in opened])
    return open_store


def lease(n: int, *addresses: str, start: float = T0, end: float = T0 + 600,
          state: str = ACTIVE, client: str = "10.0.0.9:40000") -> Lease:
    return Lease(lease_id=b"\0" + n.to_bytes(16, "big"), scope="studio",
                 addresses=addresses or (f"239.255.0.{n}",), start=start, end=end,
                 state=state, client=client, granted=start, hold_until=end + GUARD, xid=n)


def test_add_then_get_by_lease_id_address_and_client(opener: Opener) -> None:
    store = opener()
    one, two = lease(1), lease(2, "239.255.0.2", "239.255.0.3", client="10.0.0.7:1")
    assert store.commit([one, two]).refused == frozenset()
    assert store.get(one.lease_id) == one
    assert store.get(b"\0" * 17) is None
    assert store.by_address("239.255.0.3") == [two]
    assert store.by_address("239.255.0.30") == []  # no prefix match
    assert store.by_client("10.0.0.7:1") == [two]
    assert store.commits == 1


def test_renew_replaces_the_lease(opener: Opener) -> None:
    store = opener()
    store.commit([lease(1)])
    renewed = lease(1, end=T0 + 3600)
    assert store.commit([renewed]).refused == frozenset()
    assert store.get(renewed.lease_id) == renewed
    assert len(store.by_address("239.255.0.1")) == 1


def test_release_keeps_the_address_for_the_guard_time(opener: Opener) -> None:
    store = opener()
    store.commit([lease(1)])
    released = lease(1, end=T0 + 10, state=RELEASED)
    store.commit([released])
    assert store.load(T0 + 10 + GUARD - 1) == [released]  # still held: guard time
    assert store.load(T0 + 10 + GUARD) == []


def test_expired_leases_are_not_loaded_after_their_guard_time(opener: Opener) -> None:
    store = opener()
    store.commit([lease(1, end=T0 + 60), lease(2, end=T0 + 600)])
    store.commit([lease(1, end=T0 + 60, state=EXPIRED)])
    assert [le.lease_id for le in store.load(T0 + 60 + GUARD)] == [lease(2).lease_id]
    assert store.get(lease(1).lease_id) is not None  # kept until purged
    assert store.purge(T0 + 60 + GUARD) == 1
    assert store.get(lease(1).lease_id) is None and store.get(lease(2).lease_id) is not None


def test_commit_refuses_only_the_lease_whose_address_another_holds(opener: Opener) -> None:
    store = opener()
    holder = lease(1, "239.255.0.1")
    store.commit([holder])
    clash = lease(2, "239.255.0.1", start=T0 + 300, end=T0 + 900)  # inside the holder's
    fine = lease(3, "239.255.0.3")
    result = store.commit([clash, fine])
    assert result.refused == frozenset({clash.lease_id})
    assert result.taken == (holder,)
    assert store.get(clash.lease_id) is None and store.get(fine.lease_id) == fine


def test_the_guard_time_holds_an_address_and_then_lets_it_go(opener: Opener) -> None:
    store = opener()
    store.commit([lease(1, "239.255.0.1", end=T0 + 60, state=RELEASED)])
    in_guard = lease(2, "239.255.0.1", start=T0 + 60 + GUARD - 1, end=T0 + 900)
    assert store.commit([in_guard]).refused == frozenset({in_guard.lease_id})
    after = lease(3, "239.255.0.1", start=T0 + 60 + GUARD, end=T0 + 900)
    assert store.commit([after]).refused == frozenset()


def test_reopen_keeps_everything(opener: Opener) -> None:
    store = opener()
    leases = [lease(n) for n in range(1, 6)]
    store.commit(leases)
    store.close()
    again = opener()
    assert sorted(again.load(T0), key=lambda le: le.xid) == leases
    clash = lease(9, "239.255.0.2")  # still refused: the holders are known after a restart
    assert again.commit([clash]).refused == frozenset({clash.lease_id})
    assert again.problem is None


def test_clock_and_reply_cache(opener: Opener) -> None:
    store = opener()
    assert abs(store.now() - time.time()) < 5
    cache = store.reply_cache()
    key = (7, 3, b"\0" * 17, "10.0.0.9:40000")
    cache.put(key, b"reply", T0)
    cached = cache.get(key)
    assert cached is not None and cached.reply == b"reply" and cached.stamp == T0
    cache.expire(T0 + 1, T0 + 61)
    assert cache.get(key) is None
    cache.put(key, None, T0)
    cache.discard(key)
    assert cache.get(key) is None


def test_reply_cache_sweep_after_the_clock_stepped_back(opener: Opener) -> None:
    # Entries stamped after now are from before a step back: their age is unknown, so
    # they go, and the sweep does not stop at them and keep everything behind them.
    cache = opener().reply_cache()
    keys = [(n, 3, b"\0" * 17, "10.0.0.9:40000") for n in range(4)]
    cache.put(keys[0], b"old", T0 - 120)
    cache.put(keys[1], b"ahead", T0 + 600)
    cache.put(keys[2], b"stale", T0 - 90)
    cache.put(keys[3], b"fresh", T0)
    cache.expire(T0 - 60, T0)
    assert [cache.get(k) is not None for k in keys] == [False, False, False, True]


def test_reply_cache_keeps_at_most_its_limit(opener: Opener) -> None:
    cache = opener().reply_cache()
    cache.limit = 3
    keys = [(n, 3, b"\0" * 17, "10.0.0.9:40000") for n in range(5)]
    evicted = [cache.put(key, bytes([n]), T0 + n) for n, key in enumerate(keys)]
    assert evicted == [False, False, False, True, True]
    assert [cache.get(k) is not None for k in keys] == [False, False, True, True, True]
    assert cache.put(keys[4], b"again", T0 + 9) is False  # a replaced entry evicts nothing


def test_empty_commit_is_accepted(opener: Opener) -> None:
    store = opener()
    assert store.commit([]).refused == frozenset()
    assert store.check() is None


# -- SQLite's own: the schema versions ---------------------------------------------------
def test_sqlite_migrates_a_file_written_before_schema_versions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "leases.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("INSERT INTO leases VALUES (?, 'studio', '239.255.0.1', ?, ?, 'active', "
                "'10.0.0.9:40000', ?, ?, 1)", (lease(1).lease_id, T0, T0 + 600, T0,
                                                T0 + 600 + GUARD))
    old.commit()
    old.close()
    store = SqliteLeaseStore(path)
    assert store.schema_version == SCHEMA_VERSION == 1
    assert store.load(T0) == [lease(1)]
    store.close()
    # a later version's step runs once, in order, on the next open
    later = (*MIGRATIONS, "CREATE INDEX leases_scope ON leases(scope)")
    monkeypatch.setattr("madcap.store.sqlite.MIGRATIONS", later)
    monkeypatch.setattr("madcap.store.sqlite.SCHEMA_VERSION", len(later))
    SqliteLeaseStore(path).close()
    again = SqliteLeaseStore(path)
    assert again.schema_version == 2 and again.load(T0) == [lease(1)]
    again.close()
    db = sqlite3.connect(path)
    versions = [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert versions == [1, 2] and "leases_scope" in indexes


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    SqliteLeaseStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(LeaseStoreError, match="newer than this madcapd"):
        SqliteLeaseStore(path)


def test_one_address_held_by_a_lease_now_and_another_later(opener: Opener) -> None:
    store = opener()
    now, later = lease(1, "239.255.0.1"), lease(2, "239.255.0.1", start=T0 + 2000,
                                                  end=T0 + 2600)
    assert store.commit([now, later]).refused == frozenset()
    clash_now = lease(3, "239.255.0.1", start=T0 + 10)
    clash_later = lease(4, "239.255.0.1", start=T0 + 2100, end=T0 + 2200)
    result = store.commit([clash_now, clash_later])
    assert result.refused == frozenset({clash_now.lease_id, clash_later.lease_id})
    assert set(result.taken) == {now, later}
    # [start, hold_until] windows that do not meet are no clash (the allocator keeps the
    # guard before a start itself)
    between = lease(5, "239.255.0.1", start=T0 + 700, end=T0 + 1800)
    assert store.commit([between]).refused == frozenset()
    store.close()
    again = opener()
    assert again.commit([clash_now]).refused == frozenset({clash_now.lease_id})


def test_sqlite_purge_with_nothing_due_scanned_every_address_held(tmp_path: Path) -> None:
    # Every minute the purge (in the commit thread: the next commit waits for it) looked
    # at every address held to find those whose guard time was over, ~20-100 ms for
    # 200,000-1,000,000 leases even when none was due; it now costs what is due.
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3", "normal")
    held = [lease(n, f"239.{128 + (n >> 16)}.{n >> 8 & 255}.{n & 255}", start=T0 + n / 1000,
                  end=T0 + 3600) for n in range(200_000)]
    store.commit(held)
    started = time.thread_time()
    assert store.purge(T0 + 60) == 0
    cost = time.thread_time() - started
    assert cost < 0.005, f"a purge that freed nothing cost {cost * 1000:.1f} ms"
    assert store.purge(T0 + 3600 + GUARD) == 200_000  # and all of them once due
    assert not store._overlapping(lease(1, "239.128.0.1"))
    store.close()
