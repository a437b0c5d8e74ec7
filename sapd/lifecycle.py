"""Session lifecycle as a sans-IO engine: bytes and timestamps in, events and writes out.

Surface (after aioquic): :meth:`Engine.receive_datagram` for every packet,
:meth:`Engine.get_timer` / :meth:`Engine.handle_timer` for expiry,
:meth:`Engine.next_event` for subscribers and :meth:`Engine.take_writes` for the
store. No sockets, no clock, no SQLite in here.

Identity (RFC 2974 section 5, and what receivers got wrong): a session is its ``o=``
fields without the version, as announced by one originating source with one kind of
authentication. A higher version from that source replaces it; the same identity
from another source is a different announcement listed beside it. A packet whose
(source, hash) is already known only refreshes last-seen, without parsing SDP.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sapd import sdp, wire
from sapd.directory import SessionRecord
from sapd.scopes import ScopeTable

# Packet outcomes (counter labels). Drops say why.
ACCEPTED_NEW = "new"
ACCEPTED_CHANGED = "changed"
ACCEPTED_REFRESH = "refresh"
ACCEPTED_DELETE = "deleted"
DROP_ZERO_HASH = "zero_hash"
DROP_ENCRYPTED = "encrypted"
DROP_NOT_SDP = "not_sdp"
DROP_INVALID_SDP = "invalid_sdp"
DROP_OWN = "own_packet"
DROP_OLD_VERSION = "old_version"
DROP_UNKNOWN_DELETION = "unknown_deletion"
DROP_BAD_DELETION = "bad_deletion"
DROP_SESSION_CAP = "session_cap"
DROP_RATE_LIMITED = "rate_limited"
DROP_TOO_LARGE = "too_large"
DROP_ENDED = "ended"

# Repeats closer than this are the same announcement sent twice (aes67-linux-daemon #50).
REPEAT_WINDOW = 1.0
PERIOD_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class Profile:
    """Expiry rules: a session not heard for ``multiplier`` periods, but never sooner
    than ``expiry_floor`` seconds, expires. ``default_period`` is assumed until two
    arrivals have been measured; ``announce_floor`` is the announcer's minimum interval."""

    name: str
    expiry_floor: float
    default_period: float
    announce_floor: float
    multiplier: float = 10.0


PROFILES: dict[str, Profile] = {
    # RFC 2974: 10 periods or one hour, whichever is greater; 300 s announce floor.
    "rfc": Profile("rfc", expiry_floor=3600.0, default_period=300.0, announce_floor=300.0),
    # Dante/AES67 announce every ~30 s: an unplugged device is gone within ~5 minutes.
    "aes67": Profile("aes67", expiry_floor=60.0, default_period=30.0, announce_floor=30.0),
}
DEFAULT_PROFILE = "aes67"


@dataclass(frozen=True, slots=True)
class Limits:
    max_sessions: int = 100_000
    max_sdp_bytes: int = 16 * 1024  # after inflation
    source_rate: float = 100.0  # new or changed announcements per source per second
    source_burst: float = 200.0
    max_tracked_sources: int = 10_000
    accept_zero_hash: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # new, changed, deleted, expired
    session_id: str
    time: float
    record: SessionRecord

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "id": self.session_id, "time": self.time,
                "session": self.record.to_json()}


@dataclass(slots=True)
class Writes:
    """What the store must do; the adapter applies it in one transaction."""

    upserts: dict[str, SessionRecord] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    refreshes: dict[str, tuple[float, float | None, float | None]] = field(
        default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.refreshes)


@dataclass(slots=True)
class _Entry:
    """Content (immutable record) plus the liveness that moves on every arrival."""

    record: SessionRecord
    last_seen: float
    expires: float | None
    period: float | None
    stale: bool
    stop_time: float | None
    arrivals: deque[float] = field(default_factory=deque)
    heap_expiry: float | None = None  # a lower bound of expires kept in the heap

    @classmethod
    def of(cls, record: SessionRecord, stop_time: float | None) -> _Entry:
        return cls(record, record.last_seen, record.expires, record.period, record.stale,
                   stop_time)

    def snapshot(self) -> SessionRecord:
        return self.record.with_changes(last_seen=self.last_seen, expires=self.expires,
                                        period=self.period, stale=self.stale)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


def session_id(source: str, identity: str, auth_tag: str) -> str:
    return hashlib.blake2b(f"{source}|{identity}|{auth_tag}".encode(),
                           digest_size=8).hexdigest()


def auth_tag_of(packet: wire.SapPacket) -> str:
    """What kind of authentication an announcement carried ('' for none). Signatures are
    not verified (no keys are configured), but announcements with and without
    authentication are never merged, which is what blocks hijacking (RFC 2974 s. 5)."""
    if packet.auth is None:
        return ""
    return {0: "pgp", 1: "cms"}.get(packet.auth.auth_type, f"auth{packet.auth.auth_type}")


class Engine:
    def __init__(self, *, profile: Profile | None = None, limits: Limits | None = None,
                 scopes: ScopeTable | None = None) -> None:
        self.profile = profile or PROFILES[DEFAULT_PROFILE]
        self.limits = limits or Limits()
        self.scopes = scopes or ScopeTable()
        self.counters: Counter[str] = Counter()
        self._entries: dict[str, _Entry] = {}
        self._by_hash: dict[tuple[str, int], str] = {}
        self._by_key: dict[tuple[str, str, str], str] = {}
        self._heap: list[tuple[float, str]] = []
        self._events: deque[Event] = deque()
        self._writes = Writes()
        self._buckets: dict[str, _Bucket] = {}
        self._own: set[tuple[str, int]] = set()

    # -- state loading and own announcements ------------------------------------------
    def load(self, records: Iterable[SessionRecord]) -> int:
        """Adopt sessions from the store at start-up (already marked stale there)."""
        count = 0
        for record in records:
            stop = record.options.get("stop_time")
            self._index(_Entry.of(record, float(stop) if stop is not None else None))
            count += 1
        return count

    def mark_own(self, source: str, msg_hash: int, own: bool = True) -> None:
        """(source, hash) pairs we announce ourselves; they are never re-ingested."""
        if own:
            self._own.add((source, msg_hash))
        else:
            self._own.discard((source, msg_hash))

    # -- queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sid: str) -> SessionRecord | None:
        entry = self._entries.get(sid)
        return entry.snapshot() if entry else None

    def records(self) -> Iterable[SessionRecord]:
        return (e.snapshot() for e in self._entries.values())

    def sessions_by_scope(self) -> Counter[str]:
        return Counter(e.record.scope for e in self._entries.values())

    def groups_in_use(self) -> set[str]:
        return {g for e in self._entries.values() for g in e.record.groups}

    # -- outputs -----------------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def take_writes(self) -> Writes:
        writes, self._writes = self._writes, Writes()
        return writes

    def get_timer(self) -> float | None:
        """When to call handle_timer next (may be early: the heap holds lower bounds)."""
        while self._heap:
            when, sid = self._heap[0]
            entry = self._entries.get(sid)
            if entry is None or entry.heap_expiry != when:
                heapq.heappop(self._heap)  # superseded
                continue
            return when
        return None

    def handle_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            when, sid = heapq.heappop(self._heap)
            entry = self._entries.get(sid)
            if entry is None or entry.heap_expiry != when:
                continue
            if entry.expires is None or entry.expires > now:
                self._schedule(sid, entry)  # refreshed since: re-arm at the real time
                continue
            self.counters["expired"] += 1
            self._remove(sid, "expired", now)

    # -- input -------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, now: float) -> str:
        """Process one datagram; returns its outcome label (also counted)."""
        outcome = self._receive(data, now)
        self.counters[outcome] += 1
        return outcome

    def _receive(self, data: bytes, now: float) -> str:
        try:
            packet = wire.decode(data, max_inflated=self.limits.max_sdp_bytes)
        except wire.SapDecodeError as exc:
            return exc.reason.value
        source = str(packet.source)
        hash_key = (source, packet.msg_id_hash)
        if hash_key in self._own:
            return DROP_OWN
        if packet.msg_id_hash == 0 and not self.limits.accept_zero_hash:
            return DROP_ZERO_HASH
        if packet.encrypted:
            return DROP_ENCRYPTED
        if not packet.is_sdp:
            return DROP_NOT_SDP
        if packet.deletion:
            return self._deletion(packet, source, now)
        known = self._by_hash.get(hash_key)
        if known is not None:
            self._refresh(known, now)
            return ACCEPTED_REFRESH
        if len(packet.payload) > self.limits.max_sdp_bytes:
            return DROP_TOO_LARGE
        if not self._take_token(source, now):
            return DROP_RATE_LIMITED
        session, _errors, _warnings = sdp.validate(packet.payload)
        if session is None:
            return DROP_INVALID_SDP
        return self._announce(packet, session, source, now)

    def _take_token(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.limits.max_tracked_sources:
                # Forget the idlest half: a spoofing flood must not grow memory.
                for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1].stamp)[
                        : len(self._buckets) // 2]:
                    del self._buckets[key]
            bucket = self._buckets[source] = _Bucket(self.limits.source_burst, now)
        bucket.tokens = min(self.limits.source_burst,
                            bucket.tokens + (now - bucket.stamp) * self.limits.source_rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _expiry(self, entry: _Entry) -> float | None:
        if entry.record.local:
            return entry.stop_time
        period = entry.period or self.profile.default_period
        silence = max(self.profile.expiry_floor, self.profile.multiplier * period)
        expires = entry.last_seen + silence
        if entry.stop_time is not None:
            expires = min(expires, entry.stop_time)
        return expires

    def _note_arrival(self, entry: _Entry, now: float) -> None:
        """Record an arrival and re-estimate the period: the median of recent gaps, so
        one lost or doubled packet does not swing it."""
        arrivals = entry.arrivals
        if arrivals and now - arrivals[-1] < REPEAT_WINDOW:
            return  # a duplicate, not a period sample
        arrivals.append(now)
        if len(arrivals) > PERIOD_SAMPLES + 1:
            arrivals.popleft()
        if len(arrivals) >= 2:
            gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
            entry.period = gaps[len(gaps) // 2]

    def _schedule(self, sid: str, entry: _Entry) -> None:
        entry.heap_expiry = entry.expires
        if entry.expires is not None:
            heapq.heappush(self._heap, (entry.expires, sid))

    def _refresh(self, sid: str, now: float) -> None:
        entry = self._entries[sid]
        self._note_arrival(entry, now)
        entry.last_seen = now
        entry.stale = False
        entry.expires = self._expiry(entry)
        if entry.expires is not None and (entry.heap_expiry is None
                                          or entry.expires < entry.heap_expiry):
            self._schedule(sid, entry)
        if sid in self._writes.upserts:
            self._writes.upserts[sid] = entry.snapshot()
        else:
            self._writes.refreshes[sid] = (now, entry.expires, entry.period)

    def _build_record(self, packet: wire.SapPacket, session: sdp.SessionDescription,
                      source: str, sid: str, now: float, previous: _Entry | None,
                      auth_tag: str) -> SessionRecord:
        groups = session.groups
        scope_name = ""
        if groups:
            scope_name = self.scopes.for_address(groups[0]).name
        sap_group = ""
        if groups:
            sap_group = str(self.scopes.for_address(groups[0]).sap_group)
        stop = session.stop_time
        attributes = [(a.name, a.value) for a in session.attributes]
        for media in session.media:
            attributes.extend((a.name, a.value) for a in media.attributes)
        old = previous.record if previous else None
        return SessionRecord(
            id=sid, source=source, identity=session.identity, version=session.version,
            msg_hash=packet.msg_id_hash, origin_address=session.origin.address,
            name=session.name, info=session.info, sdp=session.raw, scope=scope_name,
            sap_group=sap_group, first_seen=old.first_seen if old else now, last_seen=now,
            auth_tag=auth_tag,
            options={"stop_time": stop.timestamp()} if stop else {},
            groups=groups, media_types=tuple(dict.fromkeys(m.kind for m in session.media)),
            attributes=tuple(attributes))

    def _announce(self, packet: wire.SapPacket, session: sdp.SessionDescription,
                  source: str, now: float) -> str:
        auth_tag = auth_tag_of(packet)
        sid = self._by_key.get((source, session.identity, auth_tag))
        previous = self._entries.get(sid) if sid else None
        if previous is not None and sid is not None:
            old = previous.record
            if session.version < old.version:
                return DROP_OLD_VERSION
            if session.version == old.version and session.raw == old.sdp:
                # Same content under a new hash (e.g. FFmpeg restarted): adopt the hash.
                self._by_hash.pop((source, old.msg_hash), None)
                self._by_hash[(source, packet.msg_id_hash)] = sid
                previous.record = old.with_changes(msg_hash=packet.msg_id_hash)
                self._writes.upserts[sid] = previous.snapshot()
                self._refresh(sid, now)
                return ACCEPTED_REFRESH
        else:
            if len(self._entries) >= self.limits.max_sessions:
                return DROP_SESSION_CAP
            sid = session_id(source, session.identity, auth_tag)
        stop = session.stop_time
        if stop is not None and stop.timestamp() <= now:
            return DROP_ENDED
        record = self._build_record(packet, session, source, sid, now, previous, auth_tag)
        entry = _Entry.of(record, stop.timestamp() if stop else None)
        if previous is not None:
            self._by_hash.pop((source, previous.record.msg_hash), None)
            entry.arrivals, entry.period = previous.arrivals, previous.period
        self._note_arrival(entry, now)
        entry.expires = self._expiry(entry)
        self._index(entry)
        self._writes.upserts[sid] = entry.snapshot()
        self._writes.refreshes.pop(sid, None)
        self._writes.deletes.discard(sid)
        kind = ACCEPTED_CHANGED if previous is not None else ACCEPTED_NEW
        self._events.append(Event(kind, sid, now, entry.snapshot()))
        return kind

    def _index(self, entry: _Entry) -> None:
        record = entry.record
        self._entries[record.id] = entry
        self._by_key[(record.source, record.identity, record.auth_tag)] = record.id
        self._by_hash[(record.source, record.msg_hash)] = record.id
        self._schedule(record.id, entry)

    def _deletion(self, packet: wire.SapPacket, source: str, now: float) -> str:
        payload = packet.payload
        line = wire.origin_line(payload)
        origin = sdp.parse_origin_line(line) if line else None
        if origin is None:
            return DROP_BAD_DELETION
        sid = self._by_key.get((source, origin.identity, auth_tag_of(packet)))
        if sid is None:
            return DROP_UNKNOWN_DELETION
        self._remove(sid, "deleted", now)
        return ACCEPTED_DELETE

    def _remove(self, sid: str, kind: str, now: float) -> None:
        entry = self._entries.pop(sid)
        record = entry.record
        self._by_key.pop((record.source, record.identity, record.auth_tag), None)
        self._by_hash.pop((record.source, record.msg_hash), None)
        self._writes.upserts.pop(sid, None)
        self._writes.refreshes.pop(sid, None)
        self._writes.deletes.add(sid)
        self._events.append(Event(kind, sid, now, entry.snapshot()))

    # -- local sessions (the announcer's side) ----------------------------------------
    def put_local(self, record: SessionRecord, now: float) -> str:
        """Insert or replace a session published through the API; returns the event kind."""
        previous = self._entries.get(record.id)
        if previous is not None:
            self._by_hash.pop((previous.record.source, previous.record.msg_hash), None)
        stop = record.options.get("stop_time")
        entry = _Entry.of(record, float(stop) if stop is not None else None)
        entry.expires = self._expiry(entry)
        self._index(entry)
        self._writes.upserts[record.id] = entry.snapshot()
        self._writes.deletes.discard(record.id)
        kind = "changed" if previous is not None else "new"
        self._events.append(Event(kind, record.id, now, entry.snapshot()))
        return kind

    def remove_local(self, sid: str, now: float) -> SessionRecord | None:
        entry = self._entries.get(sid)
        if entry is None:
            return None
        self._remove(sid, "deleted", now)
        return entry.snapshot()


def is_multicast(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False
