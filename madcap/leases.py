"""Leases and the interface every lease store implements (SQLite embedded; PostgreSQL later).

A lease row records what a client was granted and until when its addresses stay
taken (``hold_until``: the lease end, or the release time, plus the guard time).
The allocator stages lease changes; the daemon commits them and sends the ACKs only
for what the store took. The backends live in ``madcap/store/``, chosen by
``madcap.store.open_lease_store``; ``tests/contract/test_lease_store.py`` is the suite
every backend passes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sapd.plumbing.errors import StoreUnusable

ACTIVE, RELEASED, EXPIRED, REVOKED = "active", "released", "expired", "revoked"
PAGE_LIMIT = 1000  # leases in one page of GET /v1/leases, at most and by default


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: bytes
    scope: str
    addresses: tuple[str, ...]
    start: float
    end: float
    state: str
    client: str
    granted: float
    hold_until: float  # addresses are not handed to anyone else before this
    xid: int = 0

    def with_changes(self, **changes: Any) -> Lease:
        return replace(self, **changes)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out = {"lease_id": self.lease_id.hex(), "scope": self.scope,
               "addresses": list(self.addresses), "start": self.start, "end": self.end,
               "state": self.state, "client": self.client, "granted": self.granted,
               "hold_until": self.hold_until}
        if now is not None:
            out["remaining"] = max(0.0, round(self.end - now, 3)) if self.state == ACTIVE else 0
        return out


@dataclass(frozen=True, slots=True)
class LeaseQuery:
    """The operator's filters (GET /v1/leases); None matches everything. One page:
    ``limit`` leases after the first ``offset`` in (scope, addresses) order."""

    scope: str | None = None
    state: str | None = None
    address: str | None = None
    client: str | None = None  # a prefix of "host:port"
    lease_id: str | None = None  # a hex prefix
    include_held: bool = False  # also leases ended but still in their guard time
    limit: int = PAGE_LIMIT
    offset: int = 0

    def matches(self, lease: Lease) -> bool:
        return ((self.scope is None or lease.scope == self.scope)
                and (self.state is None or lease.state == self.state)
                and (self.address is None or self.address in lease.addresses)
                and (self.client is None or lease.client.startswith(self.client))
                and (self.lease_id is None or lease.lease_id.hex().startswith(self.lease_id)))

    def select(self, leases: Iterable[Lease]) -> list[Lease]:
        """The matching leases, one pass per filter given (a call of matches() per lease
        cost 65 ms for a full pool; no filter costs nothing)."""
        found = list(leases)
        if self.scope is not None:
            found = [le for le in found if le.scope == self.scope]
        if self.state is not None:
            found = [le for le in found if le.state == self.state]
        if self.address is not None:
            found = [le for le in found if self.address in le.addresses]
        if self.client is not None:
            found = [le for le in found if le.client.startswith(self.client)]
        if self.lease_id is not None:
            found = [le for le in found if le.lease_id.hex().startswith(self.lease_id)]
        return found


@dataclass(frozen=True, slots=True)
class LeasePage:
    """One page of the operator's listing and how many leases match in all."""

    leases: list[Lease]
    total: int
    limit: int
    offset: int

    def to_json(self, now: float) -> dict[str, Any]:
        return {"leases": [le.to_json(now) for le in self.leases], "total": self.total,
                "limit": self.limit, "offset": self.offset, "now": now}


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit took. ``refused``: lease ids not stored because another lease (of
    another server on a shared database) holds one of their addresses at that time;
    ``taken``: those other leases, so that the allocator stops offering the addresses."""

    refused: frozenset[bytes] = frozenset()
    taken: tuple[Lease, ...] = ()


COMMITTED = CommitResult()


class LeaseStoreError(StoreUnusable):
    """A commit or open that failed as a whole; ``reason`` names it for the counters
    (``disk_full``, ``corrupt``, ``io``, ``locked``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(slots=True)
class CachedReply:
    reply: bytes | None
    stamp: float


# Cached replies kept at most (~250 bytes each): beyond it the oldest go first, which
# shortens the interval under a flood of distinct requests, as RFC 2730 s. 2.1.4 allows.
REPLY_CACHE_ENTRIES = 200_000
REPLY_CACHE_PER_HOST = 4_096  # replies one client host keeps: a few seconds of a busy one


CacheKey = tuple[int, int, bytes, str]  # (xid, message type, lease id, client)


class ReplyCache(Protocol):
    """RFC 2730's response cache: a retransmitted request gets the same reply. Keys are
    (xid, message type, lease id, client). Entries come in time order; at most ``limit``
    are kept."""

    limit: int

    def get(self, key: CacheKey) -> CachedReply | None: ...
    def put(self, key: CacheKey, reply: bytes | None, stamp: float) -> bool:
        """Store a reply; True when the oldest entry was evicted to make room."""
        ...

    def discard(self, key: CacheKey) -> None: ...
    def prefetch(self, keys: list[CacheKey]) -> None:
        """Look these up at once (a batch's requests), before they are got one by one."""
        ...

    def expire(self, cutoff: float, now: float) -> None:
        """Drop the entries stamped before ``cutoff``, and those stamped after ``now``
        (from before the clock stepped back: their age is unknown)."""
        ...


# Shards of the memory cache: a dict rebuilds itself when the slots its deletions left
# fill up, all its entries in one insertion; one dict of 200,000 entries took 27-150 ms,
# one of 64 shards takes 1/64th of it.
_SHARDS = 64


class MemoryReplyCache:
    """The cache in this process (one server per store: SQLite).

    Entries in 64 plain dicts by the key's hash, their time order in ``_order`` (each
    put appended; items whose entry was re-put or dropped since are skipped when they
    come up), so that no put costs more than a shard's rebuild, and the oldest entry
    is found and dropped in constant time (a dict's next(iter()) steps over every
    slot deleted since its last resize: ~40 us a put at the cap). The hosts left with
    nothing are at the front of ``per_host``."""

    __slots__ = ("_last_host", "_order", "_shards", "_size", "get", "limit", "per_host")

    def __init__(self, limit: int = REPLY_CACHE_ENTRIES) -> None:
        self._shards: list[dict[CacheKey, CachedReply]] = [{} for _ in range(_SHARDS)]
        self._order: deque[tuple[CacheKey, CachedReply]] = deque()
        self._size = 0
        self.limit = limit
        # Each host's puts, oldest first, so that one sender (whose xids and lease ids
        # cost it nothing to vary) cannot hold the whole cache: past REPLY_CACHE_PER_HOST
        # its own oldest replies go. Items whose entry was re-put or dropped since are
        # skipped. Hosts are in the order of their newest put.
        self.per_host: OrderedDict[str, deque[tuple[CacheKey, CachedReply]]] = OrderedDict()
        self._last_host = ""  # the host of the last put: already at the end of per_host
        self.get: Callable[[CacheKey], CachedReply | None] = self.lookup

    def lookup(self, key: CacheKey) -> CachedReply | None:
        """The entry held here (a shared store's cache also looks elsewhere: ``get``)."""
        return self._shards[hash(key) % _SHARDS].get(key)

    def _drop(self, key: CacheKey, cached: CachedReply) -> bool:
        """Drop the entry of ``key`` if it is still ``cached``; whether it was."""
        shard = self._shards[hash(key) % _SHARDS]
        if shard.get(key) is cached:
            del shard[key]
            self._size -= 1
            return True
        return False

    def put(self, key: CacheKey, reply: bytes | None, stamp: float) -> bool:
        shard = self._shards[hash(key) % _SHARDS]
        evicted = False
        if key not in shard:
            if self._size >= self.limit:
                order = self._order
                while order and not self._drop(*order.popleft()):
                    pass  # the oldest live entry goes
                evicted = True
            self._size += 1
        cached = shard[key] = CachedReply(reply, stamp)
        item = (key, cached)  # one tuple for both queues
        self._order.append(item)
        host = key[3].rpartition(":")[0]
        per_host = self.per_host
        puts = per_host.get(host)
        if puts is None:
            puts = per_host[host] = deque()
        elif host != self._last_host:
            per_host.move_to_end(host)
        self._last_host = host
        puts.append(item)
        if len(puts) > REPLY_CACHE_PER_HOST and self._drop(*puts.popleft()):
            evicted = True
        if len(self._order) > self._size:
            self._forget_dropped()
        return evicted

    def _forget_dropped(self) -> None:
        """Let go of the time-order items of entries dropped or replaced since (they
        hold their keys and replies): at the front at once, and all of them once they
        outnumber the entries held, so that a flood whose replies the per-host cap
        drops holds at most twice what the cache does."""
        order, shards = self._order, self._shards
        while order:
            key, cached = order[0]
            if shards[hash(key) % _SHARDS].get(key) is cached:
                break
            order.popleft()
        if len(order) > 2 * self._size + 64:
            self._order = deque(item for item in order
                                if shards[hash(item[0]) % _SHARDS].get(item[0]) is item[1])

    def discard(self, key: CacheKey) -> None:
        if self._shards[hash(key) % _SHARDS].pop(key, None) is not None:
            self._size -= 1

    def prefetch(self, keys: list[CacheKey]) -> None:
        pass  # all here

    def expire(self, cutoff: float, now: float) -> None:
        # The stale entries are at the front: stop at the first fresh one rather than
        # visit every entry, which at 8,000 exchanges/s is a million entries a second.
        # An entry stamped after now is from before the clock stepped back: the order
        # no longer tells its age, so it goes too (else the sweep would stop at it for
        # as long as the step, and everything behind it would stay).
        order, shards = self._order, self._shards
        while order:
            key, cached = order[0]
            shard = shards[hash(key) % _SHARDS]
            if shard.get(key) is cached:
                if cutoff <= cached.stamp <= now:
                    break
                del shard[key]
                self._size -= 1
            order.popleft()
        # a host whose newest put is gone has nothing left here; those are at the front
        gone = []
        for host, puts in self.per_host.items():
            newest, cached = puts[-1]
            if self.lookup(newest) is cached:
                break
            gone.append(host)
        for host in gone:
            del self.per_host[host]

    def __len__(self) -> int:
        return self._size


class LeaseStore(Protocol):
    """Durable leases. One instance per daemon; ``commit`` is all or nothing except for
    the leases it names as refused."""

    backend: str
    commits: int
    problem: str | None  # why the store is degraded (None: healthy)
    shared: bool  # other servers write to it too (a shared database)

    def now(self) -> float:
        """The clock lease decisions use (a shared database's, when there is one)."""
        ...

    def load(self, now: float) -> list[Lease]:
        """Every lease whose addresses are still held at ``now``."""
        ...

    def commit(self, leases: Sequence[Lease]) -> CommitResult:
        """Store the leases (new or changed) in one transaction; raises LeaseStoreError
        when nothing could be stored."""
        ...

    def get(self, lease_id: bytes) -> Lease | None: ...
    def by_address(self, address: str) -> list[Lease]: ...
    def by_client(self, client: str) -> list[Lease]: ...

    def purge(self, before: float) -> int:
        """Forget leases whose guard time ended before ``before``; returns how many."""
        ...

    def changes(self) -> list[Lease]:
        """Leases other servers committed since the last call (a shared store; [])."""
        ...

    def usage(self, now: float) -> dict[str, dict[str, int]] | None:
        """Per scope, addresses "leased" and "held" as the store counts them (every
        server sharing it alike), or None: the server's own view is the whole truth."""
        ...

    def page(self, query: LeaseQuery, now: float) -> LeasePage | None:
        """The operator's listing as the store has it, or None (as for usage)."""
        ...

    def reply_cache(self) -> ReplyCache: ...
    def check(self) -> str | None:
        """An integrity check; the problem found, or None."""
        ...

    def close(self) -> None: ...

