"""Multicast scope table: which SAP group and TTL serve a session's connection address.

RFC 2974 section 3: announce in the same scope as the session. For an
administrative scope (RFC 2365) the SAP group is the scope's highest address; other
IPv4 multicast uses the global group 224.2.127.254; IPv6 sessions in scope X are
announced on ff0X::2:7ffe.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sapd.plumbing import adminscope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

GLOBAL_V4_GROUP = ipaddress.IPv4Address("224.2.127.254")
SAP_V6_SUFFIX = 0x27FFE  # ff0X::2:7ffe



@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    network: IPNetwork
    sap_group: IPAddress
    ttl: int  # the largest TTL (hop limit) announcements in this scope may carry
    # one shared string per group, not one per session
    sap_group_text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sap_group_text", str(self.sap_group))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "range": str(self.network),
                "sap_group": str(self.sap_group), "ttl": self.ttl}


DEFAULT_SCOPES: tuple[Scope, ...] = tuple(
    Scope(a.name, a.network, a.highest, a.ttl) for a in adminscope.IPV4_ADMIN_SCOPES)

GLOBAL_V4_SCOPE = Scope("ipv4-global", adminscope.IPV4_MULTICAST, GLOBAL_V4_GROUP, 255)

# RFC 4291 2.7: scope F is reserved and treated as global; scope 0 is reserved and has
# no region of its own. Sessions there are announced on the global group.
_V6_GLOBAL = 0xE
_V6_RESERVED = (0x0, 0xF)


def packed_is_multicast(packed: bytes) -> bool:
    """Multicast, for a 4- or 16-byte packed address: 224/4 or ff00::/8."""
    return 224 <= packed[0] <= 239 if len(packed) == 4 else packed[0] == 0xFF


def _packed(text: str) -> bytes:
    """inet_pton (C) is several times faster than ipaddress's string parser."""
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _v6_scope(address: ipaddress.IPv6Address) -> Scope:
    nibble = address.packed[1] & 0x0F
    announced_in = _V6_GLOBAL if nibble in _V6_RESERVED else nibble
    group = ipaddress.IPv6Address((0xFF00 | announced_in) << 112 | SAP_V6_SUFFIX)
    net = ipaddress.IPv6Network(((0xFF00 | nibble) << 112, 16))
    hop_limit = 1 if nibble <= adminscope.IPV6_LINK_SCOPE_MAX else 255
    name = adminscope.IPV6_SCOPE_NAMES.get(nibble, f"ipv6-scope-{nibble:x}")
    return Scope(name, net, group, hop_limit)


class ScopeTable:
    """Ordered scopes; the narrowest configured range containing an address wins."""

    def __init__(self, scopes: Iterable[Scope] = DEFAULT_SCOPES) -> None:
        self._scopes = sorted(scopes, key=lambda s: s.network.prefixlen, reverse=True)
        self._cache: dict[str, Scope] = {}  # address text -> scope; lookups repeat a lot
        # (version, network as int, mask as int, scope): integer tests, not ipaddress's
        self._masks = [(sc.network.version, int(sc.network.network_address),
                        int(sc.network.netmask), sc) for sc in self._scopes]

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return tuple(self._scopes)

    def for_address(self, address: str | IPAddress) -> Scope:
        """The scope serving a multicast connection address, or a range of them as a
        session lists it (FIRST-LAST: the scope of its first address)."""
        if isinstance(address, str):
            cached = self._cache.get(address)
            if cached is not None:
                return cached
            if len(self._cache) > 65536:
                self._cache.clear()
            scope = self._lookup(_packed(address.partition("-")[0]))
            self._cache[address] = scope
            return scope
        return self._lookup(address.packed)

    def _lookup(self, packed: bytes) -> Scope:
        """Integer tests on the packed address: no ipaddress objects for a new group."""
        v4 = len(packed) == 4
        if not packed_is_multicast(packed):
            raise ValueError(f"{ipaddress.ip_address(packed)} is not a multicast address")
        value, version = int.from_bytes(packed, "big"), 4 if v4 else 6
        for scope_version, network, mask, scope in self._masks:
            if version == scope_version and value & mask == network:
                return scope
        return GLOBAL_V4_SCOPE if v4 else _v6_scope(ipaddress.IPv6Address(packed))

    def sap_groups(self) -> tuple[IPAddress, ...]:
        """Every SAP group :meth:`for_address` can answer: where the announcer may send,
        and so where sapd listens by default (one table, so the two cannot drift)."""
        groups: dict[IPAddress, None] = dict.fromkeys(s.sap_group for s in self._scopes)
        groups[GLOBAL_V4_GROUP] = None
        for nibble in range(16):  # ff0X::2:7ffe for every scope an IPv6 session can have
            groups[_v6_scope(ipaddress.IPv6Address((0xFF00 | nibble) << 112)).sap_group] = None
        return tuple(sorted(groups, key=lambda g: (g.version, int(g))))

    def for_group(self, group: IPAddress) -> Scope | None:
        """The scope a SAP group serves, used to label what arrives on it."""
        for scope in self._scopes:
            if scope.sap_group == group:
                return scope
        if group == GLOBAL_V4_GROUP:
            return GLOBAL_V4_SCOPE
        if isinstance(group, ipaddress.IPv6Address) and int(group) & 0xFFFFFFFF == SAP_V6_SUFFIX:
            return _v6_scope(group)
        return None

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any]],
                    include_defaults: bool = True) -> ScopeTable:
        """Build from ``[[scope]]`` config tables: name, range, optional sap_group and ttl."""
        scopes = list(DEFAULT_SCOPES) if include_defaults else []
        for i, entry in enumerate(entries):
            where = f"scope[{i}]"
            try:
                name = str(entry["name"])
                network = ipaddress.ip_network(str(entry["range"]))
            except KeyError as exc:
                raise ValueError(f"{where}.{exc.args[0]}: required") from None
            except ValueError as exc:
                raise ValueError(f"{where}.range: {exc}") from None
            if not network.is_multicast:
                raise ValueError(f"{where}.range: {network} is not multicast")
            group_text = entry.get("sap_group")
            group = (ipaddress.ip_address(str(group_text)) if group_text
                     else network.broadcast_address)
            ttl = int(entry.get("ttl", 255))
            if not 0 < ttl <= 255:
                raise ValueError(f"{where}.ttl: {ttl} is not within 1..255")
            scopes = [s for s in scopes if s.name != name]
            scopes.append(Scope(name, network, group, ttl))
        return cls(scopes)


# Every group sapd listens on by default: what the default table may announce on.
STANDARD_GROUPS: tuple[IPAddress, ...] = ScopeTable().sap_groups()
