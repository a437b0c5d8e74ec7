"""Groups the session directory lists (sapd's GET /v1/groups): never handed out.

sapd answers ``{"groups": [ADDR, ...]}`` and may add ``{"ranges": [{"first": ADDR,
"count": N}]}`` for sessions whose c= names many groups. Both become integers as the
pools count addresses: single groups a set, ranges sorted and merged (a look-up is a
set probe and a bisection). Parsing 256,000 groups costs ~40 ms with inet_pton, not the
1.3 s ipaddress took, and the daemon does it off its event loop.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

_V4 = socket.AF_INET


def _address(text: object) -> int:
    """An address as an integer; raises ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an address")
    try:
        return int.from_bytes(socket.inet_pton(_V4, text), "big")
    except OSError:
        pass
    try:
        return int(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an address") from None


class AvoidedGroups:
    """A container of integer addresses: ``value in avoided``."""

    __slots__ = ("ends", "singles", "starts")

    def __init__(self, singles: Iterable[int] = (),
                 ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.singles = frozenset(singles)
        self.starts: list[int] = []  # merged [start, end] ranges, sorted
        self.ends: list[int] = []
        for first, last in sorted(ranges):
            if self.ends and first <= self.ends[-1] + 1:
                self.ends[-1] = max(self.ends[-1], last)
            else:
                self.starts.append(first)
                self.ends.append(last)

    def __contains__(self, value: object) -> bool:
        if value in self.singles:
            return True
        if not self.starts or not isinstance(value, int):
            return False
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]

    def __len__(self) -> int:
        """Groups listed plus addresses in ranges."""
        return len(self.singles) + sum(e - s + 1 for s, e in zip(self.starts, self.ends,
                                                                 strict=True))

    @classmethod
    def from_directory(cls, answer: Any) -> tuple[AvoidedGroups, list[str]]:
        """sapd's answer, and what in it was not understood (each entry named); raises
        ValueError for an answer that is not one."""
        if not isinstance(answer, dict) or not ("groups" in answer or "ranges" in answer):
            raise ValueError("sapd's /v1/groups answer has neither groups nor ranges")
        groups, ranges = answer.get("groups", []), answer.get("ranges", [])
        if not isinstance(groups, list) or not isinstance(ranges, list):
            raise ValueError("sapd's /v1/groups answer: groups and ranges must be lists")
        bad: list[str] = []
        try:  # the usual answer, IPv4 text only: one comprehension, no frame per group
            pton, to_int = socket.inet_pton, int.from_bytes
            singles = {to_int(pton(_V4, g), "big") for g in groups}
        except (OSError, TypeError):
            singles = set()
            for group in groups:
                try:
                    singles.add(_address(group))
                except ValueError as exc:
                    bad.append(f"groups: {exc}")
        spans = []
        for entry in ranges:
            try:
                if not isinstance(entry, dict):
                    raise ValueError(f"{entry!r} is not {{first, count}}")
                first, count = _address(entry.get("first")), entry.get("count")
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    raise ValueError(f"count {count!r} is not a positive integer")
                spans.append((first, first + count - 1))
            except ValueError as exc:
                bad.append(f"ranges: {exc}")
        return cls(singles, spans), bad
