"""The reply cache's own costs under a flood from many hosts: what one put and one sweep
cost must not grow with how many entries the cache held before (RFC 2730 s. 2.1.4's
cache, madcap/leases.py MemoryReplyCache)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from madcap.leases import MemoryReplyCache

LIMIT = 50_000
LEASE_ID = b"\0" * 17


def key(n: int) -> tuple[int, int, bytes, str]:
    """The n-th request, each from a host of its own (a flood from many hosts)."""
    return (n, 3, LEASE_ID, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:4000")


def least_cpu(work: Callable[[], None], repeats: int = 3) -> float:
    least = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        work()
        least = min(least, time.thread_time() - started)
    return least


def put_many(cache: MemoryReplyCache, first: int, count: int = 20_000
             ) -> Callable[[], None]:
    """Puts of ``count`` new requests; each call goes on where the last one stopped."""
    at = [first]

    def work() -> None:
        for n in range(at[0], at[0] + count):
            cache.put(key(n), b"reply", float(n))
        at[0] += count
    return work


def test_reply_cache_at_its_cap_scanned_the_evicted_slots_on_every_put() -> None:
    # The cache evicted its oldest entry with next(iter(dict)): a dict keeps the slots
    # of deleted entries until it resizes, and iteration steps over all of them, so at
    # the cap (200,000) each put cost ~40 us instead of ~1.5 us: half an exchange.
    below = MemoryReplyCache(limit=10 * LIMIT)
    below_cost = least_cpu(put_many(below, 0))
    full = MemoryReplyCache(limit=LIMIT)
    put_many(full, 0, 3 * LIMIT)()  # at the cap long enough for the dead slots to pile up
    cap_cost = least_cpu(put_many(full, 3 * LIMIT))
    assert len(full) == LIMIT
    assert cap_cost < 3 * below_cost, \
        f"a put at the cap cost {cap_cost / below_cost:.1f}x one below it"


def test_reply_cache_sweep_visited_every_host_each_second() -> None:
    # expire() looked at every host's put log to find those left with nothing, ~20 ms
    # a second for 60,000 hosts; it now costs what is stale.
    cache = MemoryReplyCache(limit=10 * LIMIT)
    for n in range(LIMIT):
        cache.put(key(n), b"reply", 1000.0 + n / LIMIT)
    cost = least_cpu(lambda: cache.expire(900.0, 1001.0))  # nothing is stale
    assert len(cache) == LIMIT
    assert cost < 0.002, f"a sweep that drops nothing cost {cost * 1000:.1f} ms"
    cache.expire(1000.5, 1001.0)  # half of them are stale: they and their hosts go
    assert len(cache) == LIMIT // 2 and len(cache.per_host) == LIMIT // 2


def test_reply_cache_at_its_cap_compacted_all_its_entries_in_one_put() -> None:
    # One dict held every entry: the slots of evicted ones pile up until the dict
    # rebuilds itself, all 200,000 entries in one put (27-150 ms, once per ~500,000
    # puts: a stall every exchange arriving meanwhile waits for). Now no put rebuilds
    # more than a shard. 4,096 client hosts, as bench_madcap's load.
    cache = MemoryReplyCache()  # the default cap, 200,000
    hosts = [f"10.220.{n >> 8 & 15}.{n & 255}:4000" for n in range(4096)]
    costs = []
    gc.disable()  # a collection is not the cache's cost
    try:
        for n in range(360_000):
            started = time.thread_time()
            cache.put((n, 3, LEASE_ID, hosts[n % 4096]), b"reply", float(n))
            costs.append(time.thread_time() - started)
    finally:
        gc.enable()
    assert len(cache) == 200_000
    assert max(costs) < 0.008, f"one put cost {max(costs) * 1000:.1f} ms"


def test_reply_cache_time_order_kept_the_replies_the_per_host_cap_dropped() -> None:
    # With the time order in a queue of its own, the replies the per-host cap dropped
    # stayed in it behind another host's older, still live entry: a flood from one
    # host held every reply for the whole interval (the cap no longer bounded memory).
    cache = MemoryReplyCache()
    cache.put((0, 3, LEASE_ID, "10.9.9.9:4000"), b"a quiet host's reply", 0.0)
    for n in range(1, 40_000):  # one host floods; the cap keeps its newest 4,096
        cache.put((n, 3, LEASE_ID, "10.0.0.66:4000"), b"x" * 1000, float(n))
    assert len(cache) == 1 + 4_096
    assert len(cache._order) <= 2 * len(cache) + 64
