"""Multicast groups as ranges. A c= line names ``count`` contiguous groups (RFC 8866
5.7; ff15::8000:0/65535 is one line), so a session's groups are kept as ranges, never
expanded: what a session uses stays exact and costs one entry a connection.

A range's text is its address when it holds one group, else ``FIRST-LAST``
(239.255.1.1-239.255.4.232): the form in session records, the store and the API.
Pure: shared by sapd and madcapd (which avoids what sapd lists).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SEPARATOR = "-"


@dataclass(frozen=True, slots=True)
class GroupRange:
    """The groups first..last (inclusive), of one address family."""

    first: IPAddress
    last: IPAddress

    @property
    def count(self) -> int:
        return int(self.last) - int(self.first) + 1

    @property
    def text(self) -> str:
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}{SEPARATOR}{self.last}"

    def covers(self, address: IPAddress) -> bool:
        return (address.version == self.first.version
                and int(self.first) <= int(address) <= int(self.last))

    def to_json(self) -> dict[str, Any]:
        return {"first": str(self.first), "last": str(self.last), "count": self.count}


def entry(address: str, count: int) -> str:
    """The text of ``count`` groups from ``address`` (canonical, already validated)."""
    if count == 1:
        return address
    first = ipaddress.ip_address(address)
    return f"{address}{SEPARATOR}{first + (count - 1)}"


def parse(text: str) -> GroupRange:
    """A range from its text (or a single address); ValueError names a bad one."""
    first_text, _, last_text = text.partition(SEPARATOR)
    first = ipaddress.ip_address(first_text)
    last = ipaddress.ip_address(last_text) if last_text else first
    if last.version != first.version or int(last) < int(first):
        raise ValueError(f"group range {text!r}: the last address is before the first")
    return GroupRange(first, last)


def merge(ranges: Iterable[GroupRange]) -> list[GroupRange]:
    """Overlapping and adjacent ranges joined, IPv4 first, in address order."""
    ordered = sorted(ranges, key=lambda r: (r.first.version, int(r.first)))
    merged: list[GroupRange] = []
    for rng in ordered:
        if merged:
            top = merged[-1]
            if top.first.version == rng.first.version and int(rng.first) <= int(top.last) + 1:
                if int(rng.last) > int(top.last):
                    merged[-1] = GroupRange(top.first, rng.last)
                continue
        merged.append(rng)
    return merged


def addresses(ranges: Iterable[GroupRange], limit: int) -> tuple[list[str], bool]:
    """The addresses of the ranges, one by one, as long as they total at most ``limit``;
    ranges that would pass it are left out. Returns them and whether that is all."""
    out: list[str] = []
    complete = True
    for rng in ranges:
        if len(out) + rng.count > limit:
            complete = False
            continue
        out.extend(str(rng.first + i) for i in range(rng.count))
    return out, complete
