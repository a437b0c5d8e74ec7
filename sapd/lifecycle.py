"""Session lifecycle as a sans-IO engine: bytes and timestamps in, events and writes out.

Surface (after aioquic): :meth:`Engine.receive_datagram` for every packet,
:meth:`Engine.get_timer` / :meth:`Engine.handle_timer` for expiry,
:meth:`Engine.next_event` for subscribers and :meth:`Engine.take_writes` for the
store. No sockets, no clock, no SQLite in here.

Identity (RFC 2974 section 5, and what receivers got wrong): a session is its ``o=``
fields without the version, as announced by one sender with one kind of authentication.
The sender is the datagram's IP source address (what recvmsg returns), not the SAP
header's originating-source field, which any sender writes freely: deletion rights,
"same source", the own-packet filter and the rate limit follow the IP source. The header
field is kept as data (``header_source``) and, where it differs from the IP source (a
relay), also tells the relayed originators apart. A higher version from that sender
replaces it; the same identity from another sender is a different announcement listed
beside it. Under a trust policy (sapd.trust, asked in ``Engine._authorize`` only) a
signed entry takes only packets verified as its signer's, from its sender; any other
signed packet goes to an entry of its own. A packet whose (sender, hash) is already known
only refreshes last-seen, without parsing SDP. A local announcement changes only through
the control socket.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
import socket
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from sapd import sdp, wire
from sapd.plumbing import groupranges
from sapd.records import (
    EMPTY_OBJECT,
    RAVENNA,
    SAP,
    HeardVia,
    SessionRecord,
    Writes,
    record_values,
    shared_heard_via,
    shared_media_types,
    via_json,
    via_of,
    without_via,
)
from sapd.scopes import ScopeTable
from sapd.trust import UNVERIFIED_SLOT, Decision, TrustPolicy, auth_kind

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
# A packet naming one of our local announcements (same sender, identity and auth): they
# change only through the control socket, never from the network.
DROP_LOCAL = "local_session"
DROP_OLD_VERSION = "old_version"
DROP_UNKNOWN_DELETION = "unknown_deletion"
DROP_BAD_DELETION = "bad_deletion"
DROP_STALE_DELETION = "stale_deletion"
DROP_SESSION_CAP = "session_cap"
DROP_RATE_LIMITED = "rate_limited"
DROP_TOO_LARGE = "too_large"
DROP_ENDED = "ended"
# Load shedding (set by the hub while the daemon cannot keep up): a new session is
# dropped, counted, and comes back with SAP's next repetition. Never a change to or a
# deletion of a known session.
DROP_SHED_RECEIVE = "shed_receive_backlog"  # the receiver is behind the network
DROP_SHED_STORE = "shed_store_backlog"  # the store is behind the engine
# A datagram that raised inside the engine: a bug, but still counted (never lost) so
# that counted = received holds; the fuzz tests assert it stays at zero.
DROP_INTERNAL_ERROR = "internal_error"

# RAVENNA outcomes (the bridge counts them; SAP's packet counters stay SAP's)
RAVENNA_OPTIONS = ("rtsp_url", "ravenna_service")  # where a RAVENNA row's SDP came from

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
class Shedding:
    """New sessions to drop under ``reason`` while the daemon is behind, except from
    sources within ``allowance`` announcements of a full rate bucket (sending below
    their rate: a quiet device is still heard during another's flood); None: all."""

    reason: str
    allowance: float | None = None


@dataclass(slots=True)  # treated as immutable; not frozen, which costs 4x per event
class Event:
    kind: str  # new, changed, deleted, expired
    session_id: str
    time: float
    record: SessionRecord  # the engine's own (slim) record: no copy per event
    # where the new content was heard (the slim record holds none; the store has it)
    heard_via: tuple[HeardVia, ...] = ()

    def to_json(self) -> dict[str, Any]:
        session = self.record.to_json()
        if self.heard_via:
            session["heard_via"] = via_json(self.heard_via, self.record.options)
        return {"event": self.kind, "id": self.session_id, "time": self.time,
                "session": session}


@dataclass(slots=True)
class _Entry:
    """Content (immutable record) plus the liveness that moves on every arrival."""

    record: SessionRecord
    last_seen: float
    expires: float | None
    period: float | None
    stale: bool
    stop_time: float | None
    arrivals: list[float] = field(default_factory=list)  # a deque costs 760 B; this ~100
    heap_expiry: float | None = None  # a lower bound of expires kept in the heap
    seen_key: bytes | None = None  # SAP header bytes + CRC-32 of the datagram
    size: int = 500  # datagram bytes, for the announcer's group bandwidth estimate

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


def record_from_session(session: sdp.SessionDescription, scopes: ScopeTable, *, sid: str,
                        source: str, msg_hash: int, now: float, first_seen: float,
                        auth_tag: str = "", period: float | None = None,
                        expires: float | None = None, local: bool = False,
                        owner_uid: int | None = None, acl: dict[str, Any] | None = None,
                        blob: dict[str, Any] | None = None,
                        options: dict[str, Any] | None = None, verification: str = "",
                        signed_by: str = "", signer_key: str = "", header_source: str = "",
                        heard_via: tuple[HeardVia, ...] = (), site: str = "") -> SessionRecord:
    """The directory record for a validated SDP, heard or published here. Built with
    positional arguments: this runs for every new or changed announcement, and keywords
    cost a quarter more."""
    groups = session.groups
    # the first multicast connection's first address (its scope), from its entry
    first_group = groups[0].partition(groupranges.SEPARATOR)[0] if groups else None
    scope = scopes.for_address(first_group) if first_group else None
    attributes = [(a.name, a.value) for a in session.attributes]
    for media in session.media:
        attributes += [(a.name, a.value) for a in media.attributes]  # no generator frame
    stop = session.stop_time
    options = dict(options or ())
    if stop is not None:
        options["stop_time"] = stop.timestamp()
    origin_address = session.origin.address
    if origin_address == source:  # the usual case: one string, not two, per session
        origin_address = source
    media_types = tuple(dict.fromkeys(m.kind for m in session.media))
    raw = session.raw
    return SessionRecord(
        sid, source, session.identity, session.version, msg_hash, origin_address,
        session.name, session.info, raw, scope.name if scope else "",
        scope.sap_group_text if scope else "", first_seen, now, local, owner_uid, auth_tag,
        acl if acl is not None else {}, blob if blob is not None else {}, options, period,
        expires, False, groups, shared_media_types(media_types), tuple(attributes),
        zlib.crc32(raw.encode()), verification, signed_by, signer_key, header_source,
        heard_via, site)


def _slim(record: SessionRecord) -> SessionRecord:
    """What memory keeps: everything but the SDP text and attributes (the store has
    them, and only what is shown needs them: ~300 bytes a session saved at 100,000
    sessions). heard_via stays, shared (records.shared_heard_via): RAVENNA's rules and
    the relay's loop guard read it."""
    values = list(record_values(record))  # a positional copy: with_changes costs 2x
    values[_SDP_AT] = ""
    values[_ATTRIBUTES_AT] = ()
    values[_ACL_AT] = record.acl or _EMPTY
    values[_BLOB_AT] = record.blob or _EMPTY
    values[_OPTIONS_AT] = record.options or _EMPTY
    return SessionRecord(*values)


_FIELDS = [f.name for f in fields(SessionRecord)]
_SDP_AT, _ATTRIBUTES_AT, _ACL_AT, _BLOB_AT, _OPTIONS_AT = (
    _FIELDS.index(name) for name in ("sdp", "attributes", "acl", "blob", "options"))


_EMPTY = EMPTY_OBJECT  # shared by slim records; nothing in the engine mutates them


_RANGES: dict[str, groupranges.GroupRange] = {}


def _parsed_range(text: str) -> groupranges.GroupRange:
    """groupranges.parse, remembered: /v1/groups is polled, and the entries change little."""
    found = _RANGES.get(text)
    if found is None:
        if len(_RANGES) > 262_144:
            _RANGES.clear()
        found = _RANGES[text] = groupranges.parse(text)
    return found


def session_id(source: str, identity: str, auth_tag: str) -> str:
    return hashlib.blake2b(f"{source}|{identity}|{auth_tag}".encode(),
                           digest_size=8).hexdigest()


auth_tag_of = auth_kind  # without a trust policy the auth kind alone is the tag
_UNCHECKED = {kind: Decision(None, kind, "") for kind in ("", "cms", "pgp")}


def _origin_identity(line: bytes | None) -> str | None:
    """sdp.Origin.identity (every o= field but the version) straight from the o= line,
    a quarter of parse_origin_line's cost, for load shedding; None if it has not six
    fields (validation then names what is wrong)."""
    if line is None:
        return None
    fields = line.decode("utf-8", "replace").strip()[2:].split(" ")
    if len(fields) != 6 or "" in fields:
        return None
    del fields[2]
    return " ".join(fields)


def announcer_key(sender: str, header_source: str) -> str:
    """Who an announcement is from, for its session id: the IP sender, so ids stay what
    they were where the header says the same (the usual case); a relay's announcements
    are also told apart by the originating source their header names."""
    return sender if header_source == sender else f"{sender}>{header_source}"


# Senders that are this host whatever its interfaces: loopback, and the unspecified
# address the kernel gives multicast sent on lo (no address of lo has link scope).
_ALWAYS_OWN = frozenset(("127.0.0.1", "::1", "0.0.0.0", "::"))

# What the daemon makes of an arrival's ancillary data: (destination group, interface).
ArrivalReader = Callable[[Any], tuple[str, str]]


class Engine:
    def __init__(self, *, profile: Profile | None = None, limits: Limits | None = None,
                 scopes: ScopeTable | None = None, trust: TrustPolicy | None = None) -> None:
        self.trust = trust  # None: signatures are not checked (no [trust] policy)
        self.profile = profile or PROFILES[DEFAULT_PROFILE]
        self.limits = limits or Limits()
        self.scopes = scopes or ScopeTable()
        self.counters: Counter[str] = Counter()
        self._entries: dict[str, _Entry] = {}
        # Re-announcement fast path: hash + source bytes + CRC-32 of the datagram -> id.
        # The CRC guards against 16-bit hash collisions between sessions of one source.
        self._seen: dict[bytes, str] = {}
        self._dirty: set[str] = set()
        self._group_load: dict[str, list[int]] = {}  # SAP group -> [announcements, bytes]
        self._heap: list[tuple[float, str]] = []
        self._events: deque[Event] = deque()
        self._writes = Writes()
        self._buckets: dict[str, _Bucket] = {}
        self._own: set[bytes] = set()  # hash + header source bytes of packets we send
        # This host's addresses: our packets come back from one of them (multicast loop)
        self._own_addresses = _ALWAYS_OWN
        self.arrival_reader: ArrivalReader | None = None  # for heard_via; set by the daemon
        self.last_internal_error = ""  # the latest DROP_INTERNAL_ERROR, for the log
        # Rows a RAVENNA service holds now (the bridge said so since start): their
        # lifetime is the service's, not SAP's timers.
        self._ravenna_live: set[str] = set()
        self.site = ""  # this sapd's site name, on every record it makes (set by the daemon)
        self.shedding: Shedding | None = None  # set by the hub while it cannot keep up

    # -- state loading and own announcements ------------------------------------------
    def load(self, records: Iterable[SessionRecord]) -> int:
        """Adopt sessions from the store at start-up (already marked stale there)."""
        count = 0
        for record in records:
            stop = record.options.get("stop_time")
            self._index(_Entry.of(_slim(record) if record.sdp else record,
                                  float(stop) if stop is not None else None), schedule=False)
            count += 1
        self._heap = [(e.expires, sid) for sid, e in self._entries.items()
                      if e.expires is not None]
        heapq.heapify(self._heap)  # once, not 100,000 pushes
        for entry in self._entries.values():
            entry.heap_expiry = entry.expires
        return count

    def mark_own(self, source: str, msg_hash: int, own: bool = True) -> None:
        """(source, hash) pairs we announce ourselves; they are never re-ingested."""
        key = msg_hash.to_bytes(2, "big") + ipaddress.ip_address(source).packed
        if own:
            self._own.add(key)
        else:
            self._own.discard(key)

    def set_own_addresses(self, addresses: Iterable[str]) -> None:
        """This host's IP addresses: a packet whose header matches one we send is our own
        only when it also comes from one of them."""
        self._own_addresses = _ALWAYS_OWN | frozenset(addresses)

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

    def group_load(self, group: str) -> tuple[int, int]:
        """(announcements, bytes) of every session announced on a SAP group, ours too."""
        load = self._group_load.get(group)
        return (load[0], load[1]) if load else (0, 0)

    def _account(self, entry: _Entry, sign: int) -> None:
        group = entry.record.sap_group
        if group:
            load = self._group_load.setdefault(group, [0, 0])
            load[0] += sign
            load[1] += sign * entry.size

    def groups_in_use(self) -> set[str]:
        """Every group entry of a listed session: an address, or a range's FIRST-LAST."""
        return {g for e in self._entries.values() for g in e.record.groups}

    def group_ranges(self) -> list[groupranges.GroupRange]:
        """Every group a listed session uses, as merged ranges (madcapd avoids them).
        One entry a connection, never an address a group: a c= /65535 costs one."""
        return groupranges.merge(_parsed_range(g) for g in self.groups_in_use())

    # -- outputs -----------------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def take_writes(self) -> Writes:
        """What the store must do since the last call; a session refreshed after its
        upsert goes as that upsert with the latest liveness (see Writes.absorb)."""
        writes, self._writes = self._writes, Writes()
        entries = self._entries
        writes.absorb(Writes(refreshes={
            sid: (entry.last_seen, entry.expires, entry.period, entry.record.msg_hash)
            for sid in self._dirty if (entry := entries.get(sid)) is not None}))
        self._dirty.clear()
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
            if sid in self._ravenna_live and entry.record.ravenna:  # only SAP went silent
                self._drop_path(sid, entry, SAP, now)
                continue
            self.counters["expired"] += 1
            self._remove(sid, "expired", now)

    # -- input -------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, now: float, sender: str | None = None,
                         arrival: Any = None) -> str:
        """Process one datagram; returns its outcome label, counted exactly once.
        ``sender`` is its IP source address (None: trust the header, for replays that
        have none); ``arrival`` what :attr:`arrival_reader` reads heard_via from."""
        try:
            outcome = self._receive(data, now, sender, arrival)
        except Exception as exc:  # one bad datagram must not stop the drain or vanish
            self.last_internal_error = f"{type(exc).__name__}: {exc}"[:500]
            outcome = DROP_INTERNAL_ERROR
        counters = self.counters
        counters[outcome] = counters.get(outcome, 0) + 1
        return outcome

    def _receive(self, data: bytes, now: float, sender: str | None, arrival: Any) -> str:
        seen_key = None
        if len(data) >= 8:
            flags = data[0]
            head = data[2:20] if flags & 0x10 else data[2:8]
            if head in self._own and (sender is None or sender in self._own_addresses):
                return DROP_OWN
            if flags & 0xE6 == 0x20:  # SAP v1 announcement, not encrypted
                seen_key = head + zlib.crc32(data).to_bytes(4, "little")
                sid = self._seen.get(seen_key)
                # under a trust policy a signed packet is checked every time (its
                # signingTime ages): no refresh by bytes alone
                if sid is not None and not (data[1] and self.trust is not None):
                    entry = self._entries[sid]
                    # the same bytes from another sender are that sender's announcement
                    # (a copy): the slow path lists it as theirs
                    if sender is None or sender == entry.record.source:
                        self._refresh_entry(sid, entry, now)
                        return ACCEPTED_REFRESH
        try:
            packet = wire.decode(data, max_inflated=self.limits.max_sdp_bytes)
        except wire.SapDecodeError as exc:
            return exc.reason.value
        # inet_ntop (C) rather than str(IPv4Address), 1 us a datagram; the same text
        header = (socket.inet_ntop(socket.AF_INET, data[4:8]) if packet.source.version == 4
                  else str(packet.source))
        source = header if sender is None else sender
        if packet.msg_id_hash == 0 and not self.limits.accept_zero_hash:
            return DROP_ZERO_HASH
        if packet.encrypted:
            return DROP_ENCRYPTED
        if not packet.is_sdp:
            return DROP_NOT_SDP
        if packet.deletion:
            return self._deletion(packet, source, header, now, data)
        if len(packet.payload) > self.limits.max_sdp_bytes:
            return DROP_TOO_LARGE
        if not self._take_token(source, now):
            return DROP_RATE_LIMITED
        if self.shedding is not None and self._sheds(self.shedding, packet, source, header):
            return self.shedding.reason
        session, _errors, _warnings = sdp.validate(packet.payload)
        if session is None:
            return DROP_INVALID_SDP
        return self._announce(packet, session, source, header, now, seen_key, data,
                              arrival)

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

    def _sheds(self, shedding: Shedding, packet: wire.SapPacket, source: str,
               header: str) -> bool:
        """Whether load shedding drops this announcement: a new session (its o= line
        names no entry of this sender's), from a source beyond the allowance. Costs an
        o= split, not an SDP validation."""
        if shedding.allowance is not None:
            bucket = self._buckets[source]  # _take_token has just made it
            if bucket.tokens >= self.limits.source_burst - 1.0 - shedding.allowance:
                return False
        identity = _origin_identity(wire.origin_line(packet.payload))
        if identity is None:
            return False  # validation says what is wrong with it
        announcer, kind = announcer_key(source, header), auth_tag_of(packet)
        entries = self._entries
        return session_id(announcer, identity, kind) not in entries and (
            self.trust is None
            or session_id(announcer, identity, kind + UNVERIFIED_SLOT) not in entries)

    def _expiry_for(self, local: bool, period: float | None, last_seen: float,
                    stop_time: float | None) -> float | None:
        if local:
            return stop_time
        silence = max(self.profile.expiry_floor,
                      self.profile.multiplier * (period or self.profile.default_period))
        expires = last_seen + silence
        return expires if stop_time is None else min(expires, stop_time)

    def _expiry(self, entry: _Entry) -> float | None:
        return self._expiry_for(entry.record.local, entry.period, entry.last_seen,
                                entry.stop_time)

    @staticmethod
    def _note_arrival(arrivals: list[float], now: float, period: float | None) -> float | None:
        """Record an arrival and return the period estimate: the median of recent gaps,
        so one lost or doubled packet does not swing it."""
        if arrivals and now - arrivals[-1] < REPEAT_WINDOW:
            return period  # a duplicate, not a period sample
        arrivals.append(now)
        if len(arrivals) > PERIOD_SAMPLES + 1:
            del arrivals[0]
        if len(arrivals) < 2:
            return period
        gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
        return gaps[len(gaps) // 2]

    def _schedule(self, sid: str, entry: _Entry) -> None:
        entry.heap_expiry = entry.expires
        if entry.expires is not None:
            heapq.heappush(self._heap, (entry.expires, sid))

    def _refresh(self, sid: str, now: float) -> None:
        self._refresh_entry(sid, self._entries[sid], now)

    def _refresh_entry(self, sid: str, entry: _Entry, now: float) -> None:
        arrivals = entry.arrivals
        if not arrivals or now - arrivals[-1] >= REPEAT_WINDOW:
            entry.period = self._note_arrival(arrivals, now, entry.period)
        entry.last_seen = now
        entry.stale = False
        expires = entry.expires = self._expiry(entry)
        if expires is not None and (entry.heap_expiry is None or expires < entry.heap_expiry):
            self._schedule(sid, entry)
        self._dirty.add(sid)

    def _authorize(self, data: bytes, packet: wire.SapPacket, source: str, header: str,
                   identity: str, version: int, session: sdp.SessionDescription | None,
                   now: float) -> Decision:
        """The one place signatures count: which entry a packet is for, what it shows,
        or why it is dropped (sapd.trust)."""
        kind = auth_tag_of(packet)
        trust = self.trust
        if trust is None:  # one shared decision per kind: this runs for every new packet
            return _UNCHECKED.get(kind) or Decision(None, kind, "")
        announcer = announcer_key(source, header)  # its sender's entries only
        slot = self._entries.get(session_id(announcer, identity, kind))
        if slot is None and session is None:  # a deletion of an entry kept apart
            slot = self._entries.get(session_id(announcer, identity, kind + UNVERIFIED_SLOT))
        stored = slot.record if slot is not None else None
        if session is None and (stored is None or not self._take_token(source, now)):
            # a deletion of nothing costs no verification; one of something is rate
            # limited like an announcement (a verification is ~0.3 ms)
            return Decision(None if stored is None else DROP_RATE_LIMITED, kind, "")
        if session is not None:
            groups, origin = session.groups, session.origin.address
            scope = self.scopes.for_address(groups[0]).name if groups else ""
        elif stored is not None:
            groups, origin, scope = stored.groups, stored.origin_address, stored.scope
        else:
            groups, origin, scope = (), "", ""
        return trust.decide(data, packet, mode=trust.mode_for(scope, groups), source=source,
                            identity=identity, version=version, origin=origin,
                            groups=groups, stored=stored, now=now)

    def _announce(self, packet: wire.SapPacket, session: sdp.SessionDescription,
                  source: str, header: str, now: float, seen_key: bytes | None,
                  data: bytes = b"", arrival: Any = None) -> str:
        size = len(data) or 500
        decision = self._authorize(data, packet, source, header, session.identity,
                                   session.version, session, now)
        if decision.drop is not None:
            return decision.drop
        auth_tag = decision.auth_tag
        sid = session_id(announcer_key(source, header), session.identity, auth_tag)
        previous = self._entries.get(sid)
        via: tuple[HeardVia, ...] = ()
        if arrival is not None and self.arrival_reader is not None:
            group, interface = self.arrival_reader(arrival)
            via = shared_heard_via(((SAP, group, interface, source),))
        if previous is not None:
            old = previous.record
            if old.local:
                return DROP_LOCAL
            if sid in self._ravenna_live and (
                    session.version < old.version
                    or (session.version == old.version
                        and zlib.crc32(session.raw.encode()) != old.content_crc)):
                # heard over RAVENNA too, whose content wins a tie (the device's own
                # answer to a DESCRIBE): SAP only says its path is alive
                return self._sap_path_alive(sid, previous, via, seen_key, packet.msg_id_hash,
                                            now)
            if session.version < old.version:
                return DROP_OLD_VERSION
            if (session.version == old.version
                    and zlib.crc32(session.raw.encode()) == old.content_crc
                    and old.verification == decision.verification
                    and old.signer_key == decision.signer_key):
                # Same content in another datagram (new hash after a restart, or the
                # first packet after our own restart): adopt it as a refresh.
                if old.ravenna and not via_of(old.heard_via, SAP):
                    return self._sap_path_alive(sid, previous, via, seen_key,
                                                packet.msg_id_hash, now)
                self._set_seen(previous, seen_key)
                if old.msg_hash != packet.msg_id_hash:
                    previous.record = old.with_changes(msg_hash=packet.msg_id_hash)
                self._refresh(sid, now)
                return ACCEPTED_REFRESH
        elif len(self._entries) >= self.limits.max_sessions:
            return DROP_SESSION_CAP
        stop = session.stop_time
        stop_time = stop.timestamp() if stop is not None else None
        if stop_time is not None and stop_time <= now:
            return DROP_ENDED
        arrivals = previous.arrivals if previous else []
        period = self._note_arrival(arrivals, now, previous.period if previous else None)
        expires = self._expiry_for(False, period, now, stop_time)
        options: dict[str, Any] = {}
        if previous is not None and previous.record.ravenna:  # its RAVENNA path stays
            via = (*via, *via_of(previous.record.heard_via, RAVENNA))
            options = {k: v for k, v in previous.record.options.items()
                       if k in RAVENNA_OPTIONS}
        record = record_from_session(
            session, self.scopes, sid=sid, source=source, msg_hash=packet.msg_id_hash,
            now=now, first_seen=previous.record.first_seen if previous else now,
            auth_tag=auth_tag, period=period, expires=expires,
            verification=decision.verification, signed_by=decision.signed_by,
            signer_key=decision.signer_key,
            header_source="" if header == source else header, heard_via=via,
            options=options, site=self.site)
        slim = self._kept(record)
        entry = _Entry.of(slim, stop_time)
        entry.arrivals = arrivals
        entry.size = size
        if previous is not None:
            self._set_seen(previous, None)
        self._index(entry)
        self._set_seen(entry, seen_key)
        self._writes.upserts[sid] = record
        self._writes.deletes.discard(sid)
        self._dirty.discard(sid)
        kind = ACCEPTED_CHANGED if previous is not None else ACCEPTED_NEW
        # The slim record: events show no SDP, and a burst's queued events then do not
        # hold every SDP text until the store catches up.
        self._events.append(Event(kind, sid, now, slim, via))
        return kind

    def _set_seen(self, entry: _Entry, key: bytes | None) -> None:
        if entry.seen_key is not None and self._seen.get(entry.seen_key) == entry.record.id:
            del self._seen[entry.seen_key]
        entry.seen_key = key
        if key is not None:
            self._seen[key] = entry.record.id

    def _index(self, entry: _Entry, schedule: bool = True) -> None:
        record = entry.record
        previous = self._entries.get(record.id)
        if previous is not None:
            self._account(previous, -1)
        self._account(entry, +1)
        self._entries[record.id] = entry
        if schedule:
            self._schedule(record.id, entry)

    def _deletion(self, packet: wire.SapPacket, source: str, header: str, now: float,
                  data: bytes = b"") -> str:
        payload = packet.payload
        line = wire.origin_line(payload)
        origin = sdp.parse_origin_line(line) if line else None
        if origin is None:
            return DROP_BAD_DELETION
        decision = self._authorize(data, packet, source, header, origin.identity,
                                   origin.version, None, now)
        if decision.drop is not None:
            return decision.drop
        sid = session_id(announcer_key(source, header), origin.identity, decision.auth_tag)
        entry = self._entries.get(sid)
        if entry is None:
            return DROP_UNKNOWN_DELETION
        if entry.record.local:
            return DROP_LOCAL
        if origin.version < entry.record.version:
            return DROP_STALE_DELETION  # deletes a version already replaced, not the session
        if sid in self._ravenna_live and entry.record.ravenna:
            # its RAVENNA service still serves it: only the SAP path ends (as when SAP
            # goes silent); the service's withdrawal ends the row
            if via_of(entry.record.heard_via, SAP):
                self._drop_path(sid, entry, SAP, now)
            return ACCEPTED_DELETE
        self._remove(sid, "deleted", now)
        return ACCEPTED_DELETE

    def _remove(self, sid: str, kind: str, now: float) -> None:
        entry = self._entries.pop(sid)
        self._ravenna_live.discard(sid)
        self._account(entry, -1)
        self._set_seen(entry, None)
        self._dirty.discard(sid)
        self._writes.upserts.pop(sid, None)
        self._writes.refreshes.pop(sid, None)
        self._writes.deletes.add(sid)
        self._events.append(Event(kind, sid, now, entry.snapshot()))

    # -- RAVENNA (mDNS + RTSP): the bridge's side ---------------------------------------
    def _kept(self, record: SessionRecord) -> SessionRecord:
        """What memory keeps of a record: slim, except rows heard over RAVENNA (a few
        thousand at most), whose paths come and go without their SDP being sent again."""
        return record if record.ravenna else _slim(record)

    def _put_path(self, sid: str, previous: _Entry, record: SessionRecord,
                  now: float) -> None:
        """Write a row whose content stays and whose paths changed."""
        entry = _Entry.of(self._kept(record), previous.stop_time)
        entry.arrivals, entry.size = previous.arrivals, previous.size
        entry.seen_key = previous.seen_key
        entry.period = previous.period
        if via_of(record.heard_via, SAP):
            entry.expires = previous.expires
        elif sid in self._ravenna_live:
            entry.expires = None
        self._index(entry)
        self._writes.upserts[sid] = entry.snapshot()
        self._writes.deletes.discard(sid)
        self._dirty.discard(sid)
        self._events.append(Event(ACCEPTED_CHANGED, sid, now, entry.snapshot()))

    def _sap_path_alive(self, sid: str, entry: _Entry, via: tuple[HeardVia, ...],
                        seen_key: bytes | None, msg_hash: int, now: float) -> str:
        """A SAP announcement of a row RAVENNA holds, whose content stays RAVENNA's:
        its SAP path is listed (once) and timed."""
        old = entry.record
        self._set_seen(entry, seen_key)
        entry.period = self._note_arrival(entry.arrivals, now, entry.period)
        entry.last_seen = now
        entry.stale = False
        entry.expires = self._expiry(entry)
        if old.sdp and via and via_of(old.heard_via, SAP) != via:
            record = old.with_changes(heard_via=(*via, *via_of(old.heard_via, RAVENNA)),
                                      msg_hash=msg_hash, last_seen=now,
                                      expires=entry.expires, period=entry.period)
            self._put_path(sid, entry, record, now)
            self._entries[sid].seen_key = seen_key
            self._schedule(sid, self._entries[sid])
            return ACCEPTED_REFRESH
        if old.msg_hash != msg_hash:
            entry.record = old.with_changes(msg_hash=msg_hash)
        self._schedule(sid, entry)
        self._dirty.add(sid)
        return ACCEPTED_REFRESH

    def _drop_path(self, sid: str, entry: _Entry, how: str, now: float) -> None:
        """One way of hearing a row ended; another remains (the row stays)."""
        old = entry.snapshot()
        options = old.options
        if how == RAVENNA:
            options = {k: v for k, v in options.items() if k not in RAVENNA_OPTIONS}
        else:
            self._set_seen(entry, None)  # the next SAP packet lists its path again
        record = old.with_changes(heard_via=without_via(old.heard_via, how), options=options)
        if how == RAVENNA:
            last_sap = entry.arrivals[-1] if entry.arrivals else entry.last_seen
            record = record.with_changes(expires=self._expiry_for(
                False, entry.period, last_sap, entry.stop_time))
            entry.expires = record.expires
        self._put_path(sid, entry, record, now)
        if how == RAVENNA:
            new = self._entries[sid]
            new.expires = record.expires
            self._schedule(sid, new)

    def put_ravenna(self, text: str, host: str, url: str, service: str,
                    now: float) -> tuple[str, str | None]:
        """An SDP the RTSP server ``host`` gave for ``service`` (DESCRIBE or ANNOUNCE).
        Same identity rule as SAP: the o= identity from the same host is one row, so a
        stream it also announces on SAP gets a second heard_via entry. Which content
        wins: the higher o= version; on a tie, RAVENNA's. Returns (outcome, row id)."""
        if len(text.encode()) > self.limits.max_sdp_bytes:
            return DROP_TOO_LARGE, None
        session, _errors, _warnings = sdp.validate(text)
        if session is None:
            return DROP_INVALID_SDP, None
        sid = session_id(host, session.identity, "")
        previous = self._entries.get(sid)
        via: HeardVia = (RAVENNA, "", "", host)
        ravenna_options = {"rtsp_url": url, "ravenna_service": service}
        if previous is None and len(self._entries) >= self.limits.max_sessions:
            return DROP_SESSION_CAP, None
        if previous is not None and previous.record.local:
            return DROP_LOCAL, None
        stop = session.stop_time
        stop_time = stop.timestamp() if stop is not None else None
        if stop_time is not None and stop_time <= now:
            return DROP_ENDED, None
        self._ravenna_live.add(sid)
        old = previous.snapshot() if previous is not None else None
        if previous is not None and old is not None and old.sdp \
                and session.version < old.version and via_of(old.heard_via, SAP):
            # the SAP side has a newer version: its content stays, RAVENNA's path joins.
            # Not on a row heard over RAVENNA alone: the device's answer is all there is
            # (a device that rebooted counts its o= version from 1 again)
            heard = (*via_of(old.heard_via, SAP), via)
            options = {**old.options, **ravenna_options}
            if heard == old.heard_via and options == old.options:
                return self._ravenna_refresh(sid, previous, now), sid
            self._put_path(sid, previous, old.with_changes(heard_via=heard, options=options,
                                                           last_seen=now), now)
            return ACCEPTED_CHANGED, sid
        same = (previous is not None and old is not None and bool(old.sdp)
                and old.version == session.version
                and old.content_crc == zlib.crc32(session.raw.encode())
                and via in old.heard_via and old.options.get("rtsp_url") == url)
        if same and previous is not None:
            return self._ravenna_refresh(sid, previous, now), sid
        if not self._take_token(host, now):
            # a change costs what it costs on SAP: one token of its host's bucket (an
            # ANNOUNCE flood would otherwise write and publish thousands a second)
            if old is None or not old.ravenna:
                self._ravenna_live.discard(sid)  # put off: RAVENNA holds nothing yet
            return DROP_RATE_LIMITED, None
        sap_via = via_of(old.heard_via, SAP) if old is not None else ()
        record = record_from_session(
            session, self.scopes, sid=sid, source=host,
            msg_hash=old.msg_hash if old is not None else 0, now=now,
            first_seen=old.first_seen if old is not None else now,
            period=old.period if old is not None else None,
            expires=old.expires if sap_via and old is not None else None,
            heard_via=(*sap_via, via), options=ravenna_options, site=self.site)
        entry = _Entry.of(record, stop_time)
        if previous is not None:
            entry.arrivals, entry.size = previous.arrivals, previous.size
            entry.seen_key = previous.seen_key if sap_via else None
            if not sap_via:
                self._set_seen(previous, None)
        self._index(entry)
        self._writes.upserts[sid] = record
        self._writes.deletes.discard(sid)
        self._dirty.discard(sid)
        kind = ACCEPTED_CHANGED if previous is not None else ACCEPTED_NEW
        self._events.append(Event(kind, sid, now, entry.record))
        return kind, sid

    def _ravenna_refresh(self, sid: str, entry: _Entry, now: float) -> str:
        entry.last_seen = now
        entry.stale = False
        if not via_of(entry.record.heard_via, SAP):
            entry.expires = None  # confirmed again (after a restart's grace, say)
        self._dirty.add(sid)
        return ACCEPTED_REFRESH

    def remove_ravenna(self, sid: str, now: float, kind: str = "deleted") -> str | None:
        """The service went away (or its server no longer answers): the row's RAVENNA
        path ends; a row also heard on SAP stays, on SAP's timers. Returns the event."""
        self._ravenna_live.discard(sid)
        entry = self._entries.get(sid)
        if entry is None or not entry.record.ravenna:
            return None
        if via_of(entry.record.heard_via, SAP):
            self._drop_path(sid, entry, RAVENNA, now)
            return ACCEPTED_CHANGED
        self._remove(sid, kind, now)
        return kind

    def sap_sources_of(self, identity: str) -> list[str]:
        """Who announces this o= identity on SAP (a scan without copies: called when a
        RAVENNA row is considered for re-announcement, which is rare)."""
        # memory keeps heard_via only for rows RAVENNA holds: any other remote row is SAP's
        return [e.record.source for e in self._entries.values()
                if e.record.identity == identity and not e.record.local
                and (not e.record.ravenna or via_of(e.record.heard_via, SAP))]

    def ravenna_grace(self, now: float, grace: float) -> int:
        """At start-up: rows the store holds as heard over RAVENNA expire after
        ``grace`` unless the bridge finds their service again (put_ravenna)."""
        count = 0
        # heard_via values are shared (records.shared_heard_via): each one is looked at
        # once, not once a session (~40 ms at 100,000 SAP sessions)
        ravenna: dict[tuple[HeardVia, ...], bool] = {}
        for sid, entry in self._entries.items():
            via = entry.record.heard_via
            heard = ravenna.get(via)
            if heard is None:
                heard = ravenna[via] = entry.record.ravenna
            if heard and sid not in self._ravenna_live:
                deadline = now + grace
                if entry.expires is None or entry.expires > deadline:
                    entry.expires = deadline
                    self._schedule(sid, entry)
                count += 1
        return count

    # -- local sessions (the announcer's side) ----------------------------------------
    def put_local(self, record: SessionRecord, now: float, size: int = 500) -> str:
        """Insert or replace a session published through the API; returns the event kind."""
        previous = self._entries.get(record.id)
        if previous is not None:
            self._set_seen(previous, None)
        if not record.content_crc:
            record = record.with_changes(content_crc=zlib.crc32(record.sdp.encode()))
        if record.site != self.site:  # announced here: this site's, wherever it was stored
            record = record.with_changes(site=self.site)
        stop = record.options.get("stop_time")
        entry = _Entry.of(_slim(record), float(stop) if stop is not None else None)
        entry.size = size
        entry.expires = self._expiry(entry)
        self._index(entry)
        record = record.with_changes(expires=entry.expires)
        self._writes.upserts[record.id] = record
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

    # -- the store's say -------------------------------------------------------------
    def revert(self, sid: str, stored: SessionRecord | None) -> None:
        """Make memory agree with the store about one session whose write the store could
        not take: hold what the store holds (``stored``, or nothing), with no write or
        event of it pending. The next announcement of it is then new (or a change)
        again and tries once more."""
        entry = self._entries.pop(sid, None)
        if entry is not None:
            self._account(entry, -1)
            self._set_seen(entry, None)
        if stored is None or not stored.ravenna:
            self._ravenna_live.discard(sid)
        self._dirty.discard(sid)
        self._writes.upserts.pop(sid, None)
        self._writes.refreshes.pop(sid, None)
        self._writes.deletes.discard(sid)
        if any(event.session_id == sid for event in self._events):
            self._events = deque(e for e in self._events if e.session_id != sid)
        if stored is not None:
            stop = stored.options.get("stop_time")
            self._index(_Entry.of(_slim(stored) if stored.sdp else stored,
                                  float(stop) if stop is not None else None))
