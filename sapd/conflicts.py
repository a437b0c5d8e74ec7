"""Conflicts: two live sessions from different senders on the same group and port.

No single sender can see this; the directory can. Pure: records in, conflicts out. The
store narrows the candidates to sessions on groups that more than one source uses
(``DirectoryBackend.shared_group_sessions``); here their SDP decides the ports.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sapd import sdp
from sapd.plumbing import groupranges
from sapd.records import SessionRecord

CANDIDATES = 2_000  # sessions on shared groups read per computation


@dataclass(frozen=True, slots=True)
class Conflict:
    group: str
    port: int
    sessions: tuple[SessionRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "port": self.port,
                "sessions": [{"id": r.id, "name": r.name, "source": r.source}
                             for r in self.sessions]}


def destinations(description: sdp.SessionDescription) -> set[tuple[str, int]]:
    """Every (multicast group, port) the session's media send to."""
    found: set[tuple[str, int]] = set()
    for media in description.media:
        connections = media.connections or description.connections
        for connection in connections:
            if connection.multicast:
                for offset in range(min(max(media.port_count, 1), 16)):
                    found.add((connection.address, media.port + offset))
    return found


def _first_address(entry: str) -> str:
    """A group entry's first address: what destinations() compares (c= addresses)."""
    return entry.partition(groupranges.SEPARATOR)[0]


Parsed = dict[tuple[str, int], set[tuple[str, int]]]  # (id, content CRC) -> destinations
PARSED_KEPT = 2 * CANDIDATES  # memo entries kept between scans


def find_conflicts(records: Iterable[SessionRecord],
                   parsed: Parsed | None = None) -> list[Conflict]:
    """Conflicts among live (not stale) sessions, ordered by group and port. ``parsed``
    remembers each content's destinations from one call to the next: a rescan parses
    only what changed (2,000 SDPs cost ~100 ms of the interpreter lock that the
    daemon's event loop shares)."""
    memo: Parsed = {} if parsed is None else parsed
    if len(memo) > PARSED_KEPT:
        memo.clear()
    live = [r for r in records if not r.stale]
    sources: dict[str, set[str]] = {}
    firsts = {r.id: {_first_address(g) for g in r.groups} for r in live}
    for record in live:
        for group in firsts[record.id]:
            sources.setdefault(group, set()).add(record.source)
    shared = {g for g, found in sources.items() if len(found) > 1}
    users: dict[tuple[str, int], list[SessionRecord]] = {}
    for record in live:
        if shared.isdisjoint(firsts[record.id]):
            continue  # its SDP need not be parsed: no other sender is on its groups
        content = (record.id, record.content_crc or zlib.crc32(record.sdp.encode()))
        found = memo.get(content)
        if found is None:
            description, _errors, _warnings = sdp.validate(record.sdp)
            found = memo[content] = set() if description is None else destinations(
                description)
        for key in found:
            users.setdefault(key, []).append(record)
    return [Conflict(group, port, tuple(sorted(found, key=lambda r: (r.source, r.id))))
            for (group, port), found in sorted(users.items())
            if len({r.source for r in found}) > 1]


def conflicting_ids(conflicts: Iterable[Conflict]) -> set[str]:
    return {r.id for c in conflicts for r in c.sessions}
