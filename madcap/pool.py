"""Multicast scopes and address pools: configuration rules and free-address search.

Pure logic over integers and timestamps. Every address carries the time windows in
which it is taken (a lease's [start - guard, end + guard], an offer's hold); an
address is free for a request when none of its windows overlaps the requested one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from madcap.wire import IPAddress, ScopeEntry, ScopeName
from sapd.plumbing.adminscope import FORBIDDEN_V4, RELATIVE_BLOCK


class PoolConfigError(ValueError):
    """A scope or pool that must not be served; the message names the field."""


@dataclass(frozen=True, slots=True)
class ScopeConfig:
    name: str
    start: IPAddress  # the administrative scope's first address (the scope id)
    end: IPAddress  # and its last
    pool_start: IPAddress
    pool_end: IPAddress
    ttl: int = 255
    names: tuple[ScopeName, ...] = ()
    lease_default: int = 86_400
    lease_min: int = 60
    lease_max: int = 30 * 86_400
    exclusions: tuple[tuple[IPAddress, IPAddress], ...] = ()
    lifetime_end: float | None = None  # the scope stops leasing after this (Windows "expiry")
    enabled: bool = True
    max_addresses_per_lease: int = 256
    # Per client host (the datagram's source address) in this scope: addresses taken on
    # its behalf (leased, offered, or in their guard time) and outstanding offers.
    max_addresses_per_client: int = 1024
    max_offers_per_client: int = 16

    @property
    def server_address(self) -> IPAddress:
        """The MADCAP server multicast address: the scope's last address minus one."""
        return self.end - 1

    def usable(self, now: float) -> bool:
        return self.enabled and (self.lifetime_end is None or now < self.lifetime_end)

    def entry(self) -> ScopeEntry:
        return ScopeEntry(self.start, self.end, self.ttl, self.names)

    def pool_size(self) -> int:
        excluded = sum(int(b) - int(a) + 1 for a, b in self.exclusions)
        return int(self.pool_end) - int(self.pool_start) + 1 - excluded

    def excluded(self, value: int) -> bool:
        return any(int(a) <= value <= int(b) for a, b in self.exclusions)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scope_id": str(self.start), "range": f"{self.start}-{self.end}",
                "pool": f"{self.pool_start}-{self.pool_end}", "ttl": self.ttl,
                "server_address": str(self.server_address),
                "names": [{"language": n.language, "name": n.name, "default": n.default}
                          for n in self.names],
                "lease": {"default": self.lease_default, "min": self.lease_min,
                          "max": self.lease_max},
                "max_addresses_per_lease": self.max_addresses_per_lease,
                "max_addresses_per_client": self.max_addresses_per_client,
                "max_offers_per_client": self.max_offers_per_client,
                "exclusions": [f"{a}-{b}" for a, b in self.exclusions],
                "lifetime_end": self.lifetime_end, "enabled": self.enabled}


def _parse_range(text: str, where: str) -> tuple[IPAddress, IPAddress]:
    try:
        if "/" in text:
            net = ipaddress.ip_network(text)
            return net.network_address, net.broadcast_address
        first, _, last = text.partition("-")
        a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
    except ValueError as exc:
        raise PoolConfigError(f"{where}: {exc}") from None
    if a.version != b.version or int(a) > int(b):
        raise PoolConfigError(f"{where}: {text!r} is not a FIRST-LAST range")
    return a, b


def _check_v6_pool(start: ipaddress.IPv6Address, end: ipaddress.IPv6Address,
                   where: str) -> None:
    # RFC 3307: servers allocate only group IDs 0x80000000-0xFFFFFFFF, in one /96.
    if int(start) >> 32 != int(end) >> 32 or int(start) & 0xFFFFFFFF < 0x80000000:
        raise PoolConfigError(f"{where}: IPv6 pools must lie in one /96 with group IDs "
                              "0x80000000-0xffffffff (RFC 3307)")


def scope_from_config(entry: dict[str, Any], index: int) -> ScopeConfig:
    """Build and check one ``[[scope]]`` table."""
    where = f"scope[{index}]"
    try:
        name = str(entry["name"])
        start, end = _parse_range(str(entry["range"]), f"{where}.range")
    except KeyError as exc:
        raise PoolConfigError(f"{where}.{exc.args[0]}: required") from None
    if not start.is_multicast or not end.is_multicast:
        raise PoolConfigError(f"{where}.range: {start}-{end} is not multicast")
    top = end - (RELATIVE_BLOCK - 1) if start.version == 4 else end
    if "pool" in entry:
        pool_start, pool_end = _parse_range(str(entry["pool"]), f"{where}.pool")
    else:
        pool_start, pool_end = start, (top - 1 if start.version == 4 else end)
        if start.version == 6:
            pool_start = type(start)((int(start) >> 32 << 32) | 0x80000000)
            pool_end = type(start)((int(start) >> 32 << 32) | 0xFFFFFFFF)
    if pool_start.version != start.version or not (
            int(start) <= int(pool_start) <= int(pool_end) <= int(end)):
        raise PoolConfigError(f"{where}.pool: {pool_start}-{pool_end} is not inside the scope "
                              f"{start}-{end}")
    if start.version == 4:
        if int(pool_end) >= int(top):
            raise PoolConfigError(
                f"{where}.pool: {pool_start}-{pool_end} reaches the top /24 of the scope "
                f"({top}-{end}), reserved for relative addresses (RFC 2365)")
        for net in FORBIDDEN_V4:
            if int(pool_start) <= int(net.broadcast_address) and \
                    int(net.network_address) <= int(pool_end):
                raise PoolConfigError(f"{where}.pool: {pool_start}-{pool_end} overlaps "
                                      f"{net}, reserved by RFC 5771")
    else:
        assert isinstance(pool_start, ipaddress.IPv6Address)
        assert isinstance(pool_end, ipaddress.IPv6Address)
        _check_v6_pool(pool_start, pool_end, f"{where}.pool")
    names = []
    for j, raw in enumerate(entry.get("names", [])):
        try:
            names.append(ScopeName(str(raw["language"]), str(raw["name"]),
                                   bool(raw.get("default", j == 0))))
        except (KeyError, TypeError):
            raise PoolConfigError(f"{where}.names[{j}]: needs language and name") from None
    if not names:
        names.append(ScopeName("en", name, True))
    exclusions = tuple(_parse_range(str(x), f"{where}.exclusions[{j}]")
                       for j, x in enumerate(entry.get("exclusions", [])))
    scope = ScopeConfig(
        name=name, start=start, end=end, pool_start=pool_start, pool_end=pool_end,
        ttl=int(entry.get("ttl", 255)), names=tuple(names),
        lease_default=int(entry.get("lease_default", 86_400)),
        lease_min=int(entry.get("lease_min", 60)),
        lease_max=int(entry.get("lease_max", 30 * 86_400)),
        exclusions=exclusions,
        lifetime_end=float(entry["lifetime_end"]) if "lifetime_end" in entry else None,
        enabled=bool(entry.get("enabled", True)),
        max_addresses_per_lease=int(entry.get("max_addresses_per_lease", 256)),
        max_addresses_per_client=int(entry.get("max_addresses_per_client", 1024)),
        max_offers_per_client=int(entry.get("max_offers_per_client", 16)))
    if not 1 <= scope.ttl <= 255:
        raise PoolConfigError(f"{where}.ttl: {scope.ttl} is not within 1..255")
    if not 1 <= scope.max_addresses_per_lease <= 0xFFFF:
        raise PoolConfigError(f"{where}.max_addresses_per_lease: "
                              f"{scope.max_addresses_per_lease} is not within 1..65535")
    for key in ("max_addresses_per_client", "max_offers_per_client"):
        if getattr(scope, key) < 1:
            raise PoolConfigError(f"{where}.{key}: {getattr(scope, key)} is less than 1")
    if not 1 <= scope.lease_min <= scope.lease_default <= scope.lease_max:
        raise PoolConfigError(f"{where}: need 1 <= lease_min <= lease_default <= lease_max")
    return scope


def check_overlaps(scopes: Iterable[ScopeConfig]) -> None:
    seen: list[ScopeConfig] = []
    for scope in scopes:
        for other in seen:
            if scope.start.version == other.start.version and \
                    int(scope.pool_start) <= int(other.pool_end) and \
                    int(other.pool_start) <= int(scope.pool_end):
                raise PoolConfigError(f"scope {scope.name!r}: pool overlaps scope "
                                      f"{other.name!r}")
            if scope.name == other.name:
                raise PoolConfigError(f"scope {scope.name!r}: name used twice")
        seen.append(scope)


DEFAULT_SCOPE = scope_from_config({
    "name": "local", "range": "239.255.0.0/16", "ttl": 16,
    "names": [{"language": "en", "name": "Local scope (sapd default)", "default": True}],
}, 0)


DRY_MEMO = 1.0  # seconds a "pool exhausted" answer is reused without a new scan
BLOCK_BITS = 8  # the pool is indexed in blocks of 256 addresses
# Addresses one search may look at (a skipped full block counts as one): a request costs
# what it can be granted, not what it asks for or how full the pool is.
PROBE_BUDGET = 4096
DEEP_BUDGET = 1024  # taken addresses one search may check for a free time window


@dataclass(slots=True)
class Pool:
    """Which addresses of one scope are taken, and when."""

    scope: ScopeConfig
    windows: dict[int, list[tuple[float, float, bytes]]] = field(default_factory=dict)
    cursor: int = 0
    deep_cursor: int = 0  # where the search among taken addresses goes on
    freed: int = 0  # counts every event that may have made an address free
    # A scan that found nothing: (freed, the avoid set, its start). Until something is
    # freed, the avoid set changes or DRY_MEMO seconds pass, the next request is refused
    # at once: a full pool must not cost a scan of every address per request.
    dry: tuple[int, object, float] | None = None
    # block number -> how many of its addresses have windows; a block where every usable
    # address has one is skipped whole by the next-fit scan.
    occupied: dict[int, int] = field(default_factory=dict)
    _capacity: dict[int, int] = field(default_factory=dict)
    # the pool's bounds as integers, once (an address's int() is a Python method: two
    # of them were a third of a usual search)
    low: int = field(init=False)
    high: int = field(init=False)

    def __post_init__(self) -> None:
        self.low, self.high = int(self.scope.pool_start), int(self.scope.pool_end)

    def take(self, value: int, start: float, until: float, owner: bytes) -> None:
        held = self.windows.get(value)
        if held is None:
            self.windows[value] = [(start, until, owner)]
            block = value >> BLOCK_BITS
            self.occupied[block] = self.occupied.get(block, 0) + 1
        else:
            held.append((start, until, owner))

    def give_back(self, value: int, owner: bytes) -> None:
        held = self.windows.get(value)
        if held is not None:
            kept = [w for w in held if w[2] != owner]
            if kept:
                self.windows[value] = kept
            else:
                del self.windows[value]
                block = value >> BLOCK_BITS
                left = self.occupied[block] - 1
                if left:
                    self.occupied[block] = left
                else:
                    del self.occupied[block]
        self.freed += 1

    def retake(self, value: int, start: float, until: float, owner: bytes) -> None:
        """Replace ``owner``'s windows on an address by one (give_back, then take)."""
        held = self.windows.get(value)
        if held is None:
            self.take(value, start, until, owner)
        else:
            kept = [w for w in held if w[2] != owner]
            kept.append((start, until, owner))
            self.windows[value] = kept
        self.freed += 1

    def busy(self, value: int, start: float, until: float, owner: bytes | None = None) -> bool:
        return any(w_start < until and start < w_until and w_owner != owner
                   for w_start, w_until, w_owner in self.windows.get(value, ()))

    def capacity(self, block: int) -> int:
        """Addresses of the block that the pool may lease (inside it, not excluded)."""
        known = self._capacity.get(block)
        if known is None:
            first = max(block << BLOCK_BITS, int(self.scope.pool_start))
            last = min(((block + 1) << BLOCK_BITS) - 1, int(self.scope.pool_end))
            known = max(0, last - first + 1)
            for a, b in self.scope.exclusions:
                known -= max(0, min(last, int(b)) - max(first, int(a)) + 1)
            self._capacity[block] = known
        return known

    def full(self, block: int) -> bool:
        return self.occupied.get(block, 0) >= self.capacity(block)

    def find(self, count: int, start: float, until: float, avoid: Container[int],
             wanted: Iterable[int] = ()) -> list[int]:
        """Up to ``count`` free addresses for [start, until): the wanted ones first
        (when free), then next-fit from a rotating cursor so that a just-freed address
        is not the next one handed out. Each step looks at a bounded number of
        addresses: the wanted ones up to PROBE_BUDGET; the next-fit scan skips blocks in
        which every address is taken at some time (PROBE_BUDGET + count steps); if that
        finds too few, a second scan looks into taken addresses for a free time window
        (DEEP_BUDGET steps from its own rotating cursor, so small pools are searched
        whole and large ones a slice per request)."""
        if not wanted and self.dry is not None:
            freed, avoided, when = self.dry
            if freed == self.freed and avoided is avoid and 0 <= start - when < DRY_MEMO:
                return []
        low, high = self.low, self.high
        size = high - low + 1
        if count == 1 and not wanted:  # the usual request: is the cursor's address free?
            value = low + self.cursor % size
            if value not in self.windows and value not in avoid and \
                    not (self.scope.exclusions and self.scope.excluded(value)):
                self.cursor = (value - low + 1) % size
                return [value]
        chosen: list[int] = []
        picked: set[int] = set()

        def free(value: int) -> bool:
            return (low <= value <= high and value not in avoid and value not in picked
                    and not self.scope.excluded(value) and not self.busy(value, start, until))

        def pick(value: int) -> None:
            chosen.append(value)
            picked.add(value)
        for probes, value in enumerate(wanted):
            if len(chosen) >= count or probes >= PROBE_BUDGET:
                break
            if free(value):
                pick(value)
        if len(chosen) < count:
            stop, scanned = self._scan(low + self.cursor % size, count, chosen, free, pick,
                                       PROBE_BUDGET + count, skip_full=True)
            if chosen:
                self.cursor = (chosen[-1] - low + 1) % size
            elif scanned < size:
                self.cursor = stop - low  # the budget ran out: the next search goes on here
            whole = scanned >= size
            if len(chosen) < count:
                stop, scanned = self._scan(low + self.deep_cursor % size, count, chosen,
                                           free, pick, DEEP_BUDGET, skip_full=False)
                self.deep_cursor = stop - low
                whole = scanned >= size
            if not chosen and whole:
                self.dry = (self.freed, avoid, start)
        return chosen

    def _scan(self, value: int, count: int, chosen: list[int], free: Callable[[int], bool],
              pick: Callable[[int], None], budget: int, skip_full: bool) -> tuple[int, int]:
        """Next-fit from ``value`` until ``count`` are chosen, the pool has been gone
        round once or ``budget`` steps are spent; returns where it stopped and how many
        addresses it went past."""
        low, high = self.low, self.high
        size = high - low + 1
        scanned = 0
        while len(chosen) < count and scanned < size and budget > 0:
            budget -= 1
            if free(value):
                pick(value)
            elif skip_full and self.full(value >> BLOCK_BITS):
                # on to the next block's first address
                step = min((((value >> BLOCK_BITS) + 1) << BLOCK_BITS) - value,
                           high - value + 1)
                scanned += step
                value = value + step if value + step <= high else low
                continue
            scanned += 1
            value = value + 1 if value < high else low
        return value, scanned
