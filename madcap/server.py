"""The MADCAP allocator as a sans-IO state machine: datagram in, reply and staged
lease change out. It never touches a store: the caller (madcap/hub.py) commits.

    server = MadcapServer(scopes, store.load(now), now, cache=store.reply_cache())
    handled = server.handle(data, client="10.0.0.5:40000", server_address=..., now=now)
    ...                       # more datagrams of the same socket drain
    result = store.commit([...the staged leases...])   # one transaction for the batch
    server.settle(result.refused, result.taken)        # refused changes are undone
    send(handled.reply)       # unless handled.lease_id was refused

Decisions on the RFC's open points (see README "MADCAP decisions"):
- the response cache is keyed on (xid, type, lease id, client address) and also
  replays NAKs; garbled messages and server-originated types are dropped, never NAKed;
  an unknown type is NAKed Invalid Request (option 0xFFFF), one without a lease id dropped;
- quotas are per scope and client host (the source address, not the port, Client ID or
  lease id): addresses leased, offered or in their guard time, and offers outstanding;
- an omitted Lease Time means the scope's default; 0xFFFFFFFF means the scope maximum;
- a released or expired address stays taken for the guard time (EXTRA-ALLOCATION-TIME);
- duplicate options are Invalid Request (the codec rejects them; counted as invalid);
- a start time at or before now means "now".
"""

from __future__ import annotations

import heapq
import operator
import secrets
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from madcap import wire
from madcap.avoided import AvoidedGroups
from madcap.leases import (
    ACTIVE,
    EXPIRED,
    RELEASED,
    REPLY_CACHE_ENTRIES,
    REVOKED,
    Lease,
    LeasePage,
    LeaseQuery,
    MemoryReplyCache,
    ReplyCache,
)
from madcap.pool import Pool, ScopeConfig
from madcap.wire import (
    AddressRange,
    ErrorCode,
    ErrorInfo,
    Features,
    IPAddress,
    MadcapDecodeError,
    Message,
    MsgType,
    Opt,
    coalesce,
)

SUPPORTED_FEATURES: tuple[int, ...] = ()  # no Server Mobility, Retry After or Shared LID
INFINITE = 0xFFFFFFFF
NO_OPTION = 0xFFFF
_SERVER_TYPES = frozenset({MsgType.OFFER, MsgType.ACK, MsgType.NAK})
# The client message types, by their MIB counter.
_COUNTER_OF: dict[int, str] = {
    MsgType.DISCOVER: "discovers", MsgType.REQUEST: "requests", MsgType.RENEW: "renews",
    MsgType.RELEASE: "releases", MsgType.GETINFO: "informs"}


_LISTING_ORDER = operator.attrgetter("scope", "addresses")  # the operator's listing

# The scope counter a staged change of a known lease went to, by its new state.
_COUNTED_AS = {RELEASED: "released", EXPIRED: "expired", ACTIVE: "renewed"}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    response_cache: float = 60.0  # RESPONSE-CACHE-INTERVAL (RFC: 0-300, 60 recommended)
    response_cache_entries: int = REPLY_CACHE_ENTRIES  # the cache's limit
    offer_hold: float = 60.0  # OFFER-HOLD
    clock_skew: float = 1800.0  # CLOCK-SKEW-ALLOWANCE
    guard: float = 3600.0  # EXTRA-ALLOCATION-TIME, both sides of every lease
    server_id: IPAddress | None = None  # default: the address a request arrived on


@dataclass(slots=True)
class _Offer:
    lease_id: bytes
    scope: ScopeConfig
    addresses: list[int]
    start: float
    end: float
    held_until: float
    host: str = ""  # the client host it was made to (the datagram's source address)


# One datagram's outcome, (reply, lease id, staged): the reply to send once ``staged``
# (the lease change it depends on, if any) is durable; the lease id names the lease the
# reply speaks of. A plain tuple: a NamedTuple's constructor cost 3% of an exchange.
Handled = tuple[bytes | None, bytes | None, Lease | None]
Reply = Message | bytes | None  # what a handler answers: a Message, or its bytes already
NOTHING: Handled = (None, None, None)


@dataclass(slots=True)
class Journal:
    """What one batch staged: each lease as it was before (None: new), for an undo, and
    the cache keys of the replies that announced a change."""

    undo: dict[bytes, Lease | None]
    keys: list[tuple[int, int, bytes, str]]


@dataclass(frozen=True, slots=True)
class _Terms:
    start: float
    end: float
    minimum: int
    desired: int


class _Refused(Exception):
    def __init__(self, code: int, option: int) -> None:
        super().__init__(code, option)
        self.code = code
        self.option = option


class MadcapServer:
    def __init__(self, scopes: Iterable[ScopeConfig], leases: Iterable[Lease], now: float,
                 settings: ServerSettings | None = None,
                 cache: ReplyCache | None = None) -> None:
        self.settings = settings or ServerSettings()
        self.scopes = list(scopes)
        self._by_id = {s.start: s for s in self.scopes}
        self._family_of = {s.name: wire.FAMILY_IPV4 if s.start.version == 4
                           else wire.FAMILY_IPV6 for s in self.scopes}
        self.pools = {s.name: Pool(s) for s in self.scopes}
        self.counters: Counter[str] = Counter()
        self.scope_counters: dict[str, Counter[str]] = {s.name: Counter() for s in self.scopes}
        self.leases: dict[bytes, Lease] = {}
        self.held: dict[bytes, Lease] = {}  # ended, addresses still held for the guard time
        self._offers: dict[bytes, _Offer] = {}
        self._cache: ReplyCache = cache if cache is not None else MemoryReplyCache()
        self._cache.limit = self.settings.response_cache_entries
        # staged since the last settle(): each lease as it was before, for an undo, and
        # the cache keys of the replies that announced a change
        self._undo: dict[bytes, Lease | None] = {}
        self._undo_keys: list[tuple[int, int, bytes, str]] = []
        self._staged: Lease | None = None  # by the message being handled
        self._avoided = AvoidedGroups()
        # (end, lease id) of every active lease, soonest first; entries of leases renewed,
        # released or revoked since are skipped when they come up. Scanning 300,000
        # leases every second stalled the loop ~15 ms.
        self._ends: list[tuple[float, bytes]] = []
        # Per (scope, client host): addresses taken on its behalf (leases until their hold
        # ends, and offers) and outstanding offers. The host is the datagram's source
        # address: the Client ID and the lease id are written by the client.
        self._charged: dict[bytes, tuple[tuple[str, str], int]] = {}
        self._usage: dict[tuple[str, str], int] = {}  # plain dicts: Counter's misses cost
        self._offers_of: dict[tuple[str, str], int] = {}
        self._adopt(leases)

    # -- state ---------------------------------------------------------------------------
    def _adopt(self, leases: Iterable[Lease]) -> None:
        guard = self.settings.guard
        for lease in leases:
            pool = self.pools.get(lease.scope)
            if pool is None:
                continue  # a scope removed from the configuration
            if lease.state == ACTIVE:
                self.leases[lease.lease_id] = lease
                self._ends.append((lease.end, lease.lease_id))
            else:
                self.held[lease.lease_id] = lease
            self._charge(lease.lease_id, (lease.scope, client_host(lease.client)),
                         len(lease.addresses))
            for address in lease.addresses:
                pool.take(address_value(address), lease.start - guard,
                          lease.hold_until, lease.lease_id)
        heapq.heapify(self._ends)

    def _charge(self, key: bytes, owner: tuple[str, str], count: int) -> None:
        """Count ``count`` addresses to ``owner`` under a lease id (of a lease or of an
        offer: an id never names both), replacing what was counted under it before."""
        if key in self._charged:
            self._uncharge(key)
        if count:
            self._charged[key] = (owner, count)
            self._usage[owner] = self._usage.get(owner, 0) + count

    def _uncharge(self, key: bytes) -> None:
        charged = self._charged.pop(key, None)
        if charged is not None:
            owner, count = charged
            left = self._usage[owner] - count
            if left > 0:
                self._usage[owner] = left
            else:
                del self._usage[owner]

    def _stage(self, lease: Lease) -> None:
        """Record a lease change: the caller commits it, then settle()s."""
        lid = lease.lease_id
        if lid not in self._undo:
            self._undo[lid] = self.leases.get(lid) or self.held.get(lid)
        self._staged = lease
        charged = self._charged.get(lid)
        # A renewal, release or expiry, or the lease its offer became: the addresses
        # stay counted where they are (to the host the offer was made to).
        if charged is None or charged[1] != len(lease.addresses):
            self._charge(lid, (lease.scope, client_host(lease.client)), len(lease.addresses))
        if lease.state == ACTIVE:
            self.leases[lease.lease_id] = lease
            self.held.pop(lease.lease_id, None)
            heapq.heappush(self._ends, (lease.end, lease.lease_id))
        else:
            self.leases.pop(lease.lease_id, None)
            self.held[lease.lease_id] = lease

    def seal(self) -> Journal:
        """Close the journal of what was staged so far: a batch on its way to the store.
        Later changes go to a new journal, so that the next batch can be handled while
        this one is being written, and each is settled on its own."""
        journal = Journal(self._undo, self._undo_keys)
        self._undo, self._undo_keys = {}, []
        return journal

    def settle(self, refused: Iterable[bytes] = (), taken: Iterable[Lease] = (),
               journal: Journal | None = None) -> None:
        """The store has taken the staged changes of ``journal`` (by default: all staged
        so far), except those of ``refused`` (because of ``taken``, other servers'
        leases, or a failed commit). Refused changes are undone, so that a
        retransmission is answered afresh and never by a cached ACK. A change staged
        since, on top of a refused one, is undone with it (the hub drops its reply)."""
        if journal is None:
            journal = self.seal()
        undo, keys = journal.undo, journal.keys
        restore = []
        refused = [lid for lid in refused if lid in undo]
        for lid in refused:
            before = undo[lid]
            self._undo.pop(lid, None)  # a later batch's change of it goes too
            current = self.leases.pop(lid, None) or self.held.pop(lid, None)
            if current is not None:
                pool = self.pools[current.scope]
                for address in current.addresses:
                    pool.give_back(address_value(address), lid)
                self._uncount(before, current)
            # the host is charged for what it holds: the lease before (re-charged by
            # _adopt below) or, for a refused new lease, nothing (its offer is gone too)
            self._uncharge(lid)
            if before is not None:
                restore.append(before)
            self.counters["refused"] += 1
        if refused:
            gone = set(refused)
            for key in keys:
                if key[2] in gone:
                    self._cache.discard(key)
            if self._undo_keys:
                for key in self._undo_keys:
                    if key[2] in gone:
                        self._cache.discard(key)
                self._undo_keys = [k for k in self._undo_keys if k[2] not in gone]
        taken = list(taken)
        if taken:
            # another server's leases, or its newer version of one refused here: that
            # one replaces ours, and the next search starts elsewhere (at random, so two
            # servers do not walk into each other again)
            newer = {le.lease_id for le in taken}
            restore = [le for le in restore if le.lease_id not in newer]
            self._forget(newer)
            self.scatter({le.scope for le in taken})
        if restore or taken:  # _adopt re-heapifies every lease end: only when needed
            self._adopt(restore + taken)

    def _forget(self, lease_ids: Iterable[bytes]) -> None:
        """Drop what this server holds of these leases (another version replaces it)."""
        for lid in lease_ids:
            current = self.leases.pop(lid, None) or self.held.pop(lid, None)
            self.held.pop(lid, None)
            if current is None:
                continue
            pool = self.pools.get(current.scope)
            if pool is not None:
                for address in current.addresses:
                    pool.give_back(address_value(address), lid)
            self._uncharge(lid)

    def absorb(self, leases: Iterable[Lease]) -> int:
        """Leases other servers committed to a shared database: they replace what this
        one knew of them (leases staged here and not yet settled are left to their
        commit). Returns how many changed anything."""
        changed = []
        for lease in leases:
            lid = lease.lease_id
            if lid in self._undo or (self.leases.get(lid) or self.held.get(lid)) == lease:
                continue
            changed.append(lease)
        if changed:
            self._forget(le.lease_id for le in changed)
            self._adopt(changed)
        return len(changed)

    def scatter(self, scopes: Iterable[str] | None = None) -> None:
        """Start the pools' next-fit searches at random places: servers sharing a
        database then pick different addresses, and a collision sends the one that lost
        elsewhere rather than on to the other's next address."""
        for name in scopes if scopes is not None else self.pools:
            pool = self.pools.get(name)
            if pool is not None:
                size = int(pool.scope.pool_end) - int(pool.scope.pool_start) + 1
                pool.cursor = secrets.randbelow(size)
                pool.deep_cursor = secrets.randbelow(size)

    def _uncount(self, before: Lease | None, current: Lease) -> None:
        """Counters say what happened: a change undone did not."""
        if current.state == REVOKED:
            self.counters["revokes"] -= 1
            return
        kind = ("granted" if before is None else
                _COUNTED_AS.get(current.state, "renewed"))
        self.scope_counters[current.scope][kind] -= 1

    def set_avoided(self, groups: AvoidedGroups | list[str]) -> None:
        """Groups the session directory lists (sapd's /v1/groups): never handed out.
        The daemon parses them off the loop (AvoidedGroups.from_directory)."""
        self._avoided = groups if isinstance(groups, AvoidedGroups) else \
            AvoidedGroups.from_directory({"groups": groups})[0]

    def page(self, query: LeaseQuery) -> LeasePage:
        """The operator's view: one page of the matching leases, by scope and addresses.
        A first page of a full pool costs ~20 ms, not a sort of every lease."""
        pool: list[Lease] = list(self.leases.values())
        if query.include_held:
            pool += self.held.values()
        found = query.select(pool)
        end = query.offset + query.limit
        shown = heapq.nsmallest(end, found, key=_LISTING_ORDER) if end < len(found) // 4 \
            else sorted(found, key=_LISTING_ORDER)
        return LeasePage(shown[query.offset:end], len(found), query.limit, query.offset)

    def query(self, query: LeaseQuery) -> list[Lease]:
        return self.page(query).leases

    def _retake(self, pool: Pool, lease: Lease, values: Iterable[int] | None = None) -> None:
        for value in values if values is not None else map(address_value, lease.addresses):
            pool.retake(value, lease.start - self.settings.guard, lease.hold_until,
                        lease.lease_id)

    def expire(self, now: float) -> list[Lease]:
        """Expire leases whose end has passed, drop stale offers and cache entries."""
        expired = []
        ends = self._ends
        while ends and ends[0][0] <= now:
            end, lease_id = heapq.heappop(ends)
            lease = self.leases.get(lease_id)
            if lease is None or lease.end != end:
                continue  # renewed, released or revoked since
            expired.append(self._end(lease))
        for lid in [k for k, o in self._offers.items() if o.held_until <= now]:
            self._drop_offer(lid)
        self._cache.expire(now - self.settings.response_cache, now)
        for lid in [k for k, le in self.held.items() if le.hold_until <= now]:
            ended = self.held.pop(lid)
            self._uncharge(lid)
            pool = self.pools[ended.scope]
            for address in ended.addresses:  # the guard time is over: free for all
                pool.give_back(address_value(address), lid)
        return expired

    def _end(self, lease: Lease) -> Lease:
        """Stage the expiry of a lease whose end has passed."""
        done = lease.with_changes(state=EXPIRED)
        self._stage(done)
        self.scope_counters[lease.scope]["expired"] += 1
        return done

    def _ended(self, lease: Lease) -> Lease | None:
        """A lease found whose end passed since the last sweep: expire it here, and
        answer as if it were gone (its remaining time would be negative)."""
        self._end(lease)
        return None

    def revoke(self, lease_id: bytes, now: float) -> Lease | None:
        """Operator action: end a lease now (its addresses stay held for the guard time)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return None
        done = lease.with_changes(state=REVOKED, end=now, hold_until=now + self.settings.guard)
        self._retake(self.pools[lease.scope], done)
        self._stage(done)
        self.counters["revokes"] += 1
        return done

    # -- the protocol -----------------------------------------------------------------------
    def handle(self, data: bytes, client: str, server_address: IPAddress, now: float,
               multicast: bool = False) -> Handled:
        """One datagram. The reply may be sent only after ``staged`` is durable; the
        offers/acks/naks counters count replies sent, so the sender counts them."""
        try:
            msg = wire.decode(data)
        except MadcapDecodeError as exc:
            self.counters["invalid"] += 1
            self.counters[f"invalid_{exc.reason.value}"] += 1
            return NOTHING  # too mangled to tell whether it is a NAK: never answer
        if msg.msgtype in _SERVER_TYPES:
            self.counters["ignored_server_messages"] += 1
            return NOTHING
        lease_id = msg.lease_id
        if lease_id is None:
            self.counters["invalid"] += 1  # a NAK must echo the LID: nothing to answer
            self.counters["invalid_no_lease_id"] += 1
            return NOTHING
        key = (msg.xid, msg.msgtype, lease_id, client)
        cached = self._cache.get(key)
        if cached is not None and now - cached.stamp < self.settings.response_cache:
            self.counters["retransmissions"] += 1
            return cached.reply, lease_id, None
        server_id = self.settings.server_id or server_address
        self._staged = None
        reply = self._dispatch(msg, client, server_id, now, multicast)
        out = wire.encode(reply) if isinstance(reply, Message) else reply
        if self._cache.put(key, out, now):
            self.counters["response_cache_evictions"] += 1
        staged = self._staged
        if staged is not None:
            self._staged = None
            self._undo_keys.append(key)
        return out, lease_id, staged

    def _nak(self, msg: Message, server_id: IPAddress, code: int, option: int | None = None,
             server_time: int | None = None, features: tuple[int, ...] = ()) -> Message:
        self.counters["total_errors"] += 1
        self.counters[{0: "requests_denied", 1: "invalid_requests", 2: "clock_skews",
                       3: "bad_lease_ids", 4: "unsupported_features"}.get(code, "errors")] += 1
        return Message(msgtype=MsgType.NAK, xid=msg.xid, family=msg.family,
                       lease_id=msg.lease_id, server_id=server_id,
                       error=ErrorInfo(code, option=option if code in (0, 1) else None,
                                       server_time=server_time, features=features),
                       features=self._reply_features(msg))

    @staticmethod
    def _reply_features(msg: Message) -> Features | None:
        # A client that sent a Feature List gets ours: nothing supported, nothing applied.
        return Features(SUPPORTED_FEATURES, (), ()) if msg.features is not None else None

    def _dispatch(self, msg: Message, client: str, server_id: IPAddress, now: float,
                  multicast: bool) -> Reply:
        counter = _COUNTER_OF.get(msg.msgtype)
        if counter is None:
            # RFC 2730 s. 2.2: an unrecognized type is an Invalid Request, NAKed (s. 2.6);
            # a NAK is type 6, which servers ignore, so this cannot start a NAK loop.
            self.counters["unknown_type"] += 1
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, NO_OPTION)
        self.counters[counter] += 1
        if msg.features is not None:
            missing = tuple(f for f in msg.features.required if f not in SUPPORTED_FEATURES)
            if missing:
                return self._nak(msg, server_id, ErrorCode.REQUIRED_FEATURE_NOT_SUPPORTED,
                                 features=missing)
        if msg.current_time is None and (msg.start_time is not None or
                                         msg.max_start_time is not None or
                                         msg.retry_time is not None):
            # times on the client's clock mean nothing without the Current Time option
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, Opt.CURRENT_TIME)
        if msg.current_time is not None and \
                abs(msg.current_time - now) > self.settings.clock_skew:
            return self._nak(msg, server_id, ErrorCode.EXCESSIVE_CLOCK_SKEW,
                             server_time=int(now))
        if msg.msgtype == MsgType.GETINFO:
            return self._getinfo(msg, server_id, now)
        holder = self._holder_of(msg.lease_id)
        if holder is not None and holder != client_host(client):
            # RFC 2730 s. 4: the protocol dictates "who gets to release it or renew it",
            # and a lease id is no secret (s. 2.13.3: only with Shared Lease Identifier,
            # which we do not offer, may anyone knowing it modify the lease). Another
            # host is told what a client naming an unknown lease is (s. 3.17.4).
            self.counters["lease_id_of_another_host"] += 1
            if msg.msgtype == MsgType.DISCOVER or \
                    (msg.server_id is not None and msg.server_id != server_id):
                return None  # silence, as for any DISCOVER we will not satisfy and any
                # REQUEST that chose another server (s. 2.2.4)
            return self._nak(msg, server_id, ErrorCode.LEASE_ID_NOT_RECOGNIZED)
        if msg.msgtype == MsgType.DISCOVER:
            return self._discover(msg, server_id, now, client)
        if msg.msgtype == MsgType.REQUEST:
            return self._request(msg, server_id, now, client)
        if msg.msgtype == MsgType.RENEW:
            return self._renew(msg, server_id, now)
        return self._release(msg, server_id, now)

    def _holder_of(self, lease_id: bytes | None) -> str | None:
        """The host a lease id belongs to (its lease, held lease or offer), or None."""
        assert lease_id is not None
        lease = self.leases.get(lease_id) or self.held.get(lease_id)
        if lease is not None:
            return client_host(lease.client)
        offer = self._offers.get(lease_id)
        return offer.host if offer is not None else None

    # GETINFO -----------------------------------------------------------------------------
    def _getinfo(self, msg: Message, server_id: IPAddress, now: float) -> Message:
        if msg.option_request is None:
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, Opt.OPTION_REQUEST)
        wanted = set(msg.option_request)
        scope_list = None
        if Opt.SCOPE_LIST in wanted:
            entries = []
            for scope in self.scopes:
                if scope.start.version != (4 if msg.family == wire.FAMILY_IPV4 else 6) or \
                        not scope.usable(now):
                    continue
                entry = scope.entry()
                if msg.language:
                    chosen = [n for n in entry.names
                              if n.language.lower() == msg.language.lower()]
                    chosen = chosen or [n for n in entry.names if n.default][:1]
                    entry = wire.ScopeEntry(entry.scope_id, entry.last, entry.ttl,
                                            tuple(chosen))
                entries.append(entry)
            scope_list = tuple(entries)
        features = self._reply_features(msg)
        if features is None and Opt.FEATURES in wanted:
            features = Features(SUPPORTED_FEATURES, (), ())
        return Message(msgtype=MsgType.ACK, xid=msg.xid, family=msg.family,
                       lease_id=msg.lease_id, server_id=server_id, scope_list=scope_list,
                       current_time=int(now) if Opt.CURRENT_TIME in wanted else None,
                       features=features)

    # allocation --------------------------------------------------------------------------
    def _terms(self, msg: Message, scope: ScopeConfig, now: float) -> _Terms:
        """The lease a request asks for, within the scope's limits; raises _Refused."""
        start = float(msg.start_time) if msg.start_time and msg.start_time > now else now
        if msg.max_start_time is not None and start > msg.max_start_time:
            start = max(now, float(msg.max_start_time))
        if msg.lease_time is None:
            duration = float(scope.lease_default)
        elif msg.lease_time == INFINITE:
            duration = float(scope.lease_max)
        elif msg.lease_time < scope.lease_min:
            # RFC 2730 s. 2.2.4: a server may shorten a lease, never lengthen it, so one
            # below our minimum cannot be given: error 0 (s. 3.17.1) naming Lease Time.
            self.counters["lease_below_minimum"] += 1
            self.scope_counters[scope.name]["lease_below_minimum"] += 1
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, Opt.LEASE_TIME)
        else:
            duration = float(min(msg.lease_time, scope.lease_max))
        if scope.lifetime_end is not None:
            duration = min(duration, scope.lifetime_end - start)
        if duration <= 0:
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, Opt.SCOPE)
        if msg.min_lease_time is not None and duration < msg.min_lease_time:
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, Opt.MIN_LEASE_TIME)
        if msg.num_addresses is not None:
            minimum, desired = msg.num_addresses
            if minimum > desired or desired == 0:
                raise _Refused(ErrorCode.INVALID_REQUEST, Opt.NUM_ADDRESSES)
        elif msg.address_ranges:
            minimum = desired = sum(r.count for r in msg.address_ranges)
        else:
            minimum = desired = 1
        desired = min(desired, scope.max_addresses_per_lease)
        if minimum > desired:
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, Opt.NUM_ADDRESSES)
        return _Terms(start, start + duration, minimum, desired)

    def _allocate(self, msg: Message, scope: ScopeConfig, now: float, owner: tuple[str, str]
                  ) -> tuple[list[int], float, float]:
        terms = self._terms(msg, scope, now)
        room = scope.max_addresses_per_client - self._usage.get(owner, 0)
        if terms.minimum > room:
            self.counters["client_address_quota"] += 1
            self.scope_counters[scope.name]["client_address_quota"] += 1
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, Opt.NUM_ADDRESSES)
        pool = self.pools[scope.name]
        guard = self.settings.guard
        wanted = wanted_values(msg.address_ranges, pool) if msg.address_ranges else ()
        chosen = pool.find(min(terms.desired, room), terms.start - guard, terms.end + guard,
                           self._avoided, wanted)
        if len(chosen) < terms.minimum:
            self.scope_counters[scope.name]["exhausted"] += 1
            raise _Refused(ErrorCode.COULD_NOT_COMPLETE, NO_OPTION)
        return chosen, terms.start, terms.end

    def _scope_of(self, msg: Message, now: float) -> ScopeConfig | None:
        scope = self._by_id.get(msg.scope) if msg.scope is not None else None
        if scope is None or not scope.usable(now):
            return None
        return scope

    def _pop_offer(self, lease_id: bytes, uncharge: bool = True) -> _Offer | None:
        """Forget an offer; its addresses stay counted to its client when it becomes
        a lease (``uncharge=False``: the lease's charge replaces it)."""
        offer = self._offers.pop(lease_id, None)
        if offer is not None:
            if uncharge:
                self._uncharge(lease_id)
            owner = (offer.scope.name, offer.host)
            left = self._offers_of.get(owner, 0) - 1
            if left > 0:
                self._offers_of[owner] = left
            else:
                self._offers_of.pop(owner, None)
        return offer

    def _drop_offer(self, lease_id: bytes) -> None:
        if lease_id not in self._offers:
            return  # the common case: no offer to drop
        offer = self._pop_offer(lease_id)
        if offer is not None:
            pool = self.pools[offer.scope.name]
            for value in offer.addresses:
                pool.give_back(value, lease_id)

    def _wrong_family(self, msg: Message, lease: Lease) -> bool:
        """RFC 2730 s. 2.1.3: the header's family is that of every address in the
        message; a message naming a lease of the other family is invalid in its
        context (s. 2.5), and an answer in its family could not carry the lease."""
        return msg.family != self._family_of[lease.scope]

    def _discover(self, msg: Message, server_id: IPAddress, now: float,
                  client: str) -> Reply:
        assert msg.lease_id is not None
        scope = self._scope_of(msg, now)
        if scope is None:
            if msg.scope is None:  # s. 2.2.2: MUST be included; s. 2.1.5: Invalid Request
                return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, Opt.SCOPE)
            self.counters["discovers_ignored"] += 1
            return None  # servers ignore DISCOVERs they cannot satisfy
        existing = self.leases.get(msg.lease_id)
        if existing is not None and existing.end <= now:
            existing = self._ended(existing)
        if existing is not None:
            if self._wrong_family(msg, existing):
                return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, NO_OPTION)
            return self._lease_reply(MsgType.OFFER, msg, server_id, existing, now)
        if msg.lease_id in self.held:
            self.counters["lease_id_in_guard"] += 1
            return None  # see _request: an id still held names no new lease
        self._drop_offer(msg.lease_id)
        owner = (scope.name, client_host(client))
        if self._offers_of.get(owner, 0) >= scope.max_offers_per_client:
            self.counters["client_offer_quota"] += 1
            self.scope_counters[scope.name]["client_offer_quota"] += 1
            return None  # silence, as for any DISCOVER we will not satisfy
        try:
            addresses, start, end = self._allocate(msg, scope, now, owner)
        except _Refused:
            return None  # a DISCOVER that cannot be satisfied gets silence
        held = now + self.settings.offer_hold
        pool = self.pools[scope.name]
        for value in addresses:
            pool.take(value, start - self.settings.guard, max(end, held) + self.settings.guard,
                      msg.lease_id)
        self._offers[msg.lease_id] = _Offer(msg.lease_id, scope, addresses, start, end, held,
                                            owner[1])
        self._offers_of[owner] = self._offers_of.get(owner, 0) + 1
        self._charge(msg.lease_id, owner, len(addresses))
        self.scope_counters[scope.name]["offers"] += 1
        return self._reply(MsgType.OFFER, msg, server_id, scope, addresses, start, end, now)

    def _request(self, msg: Message, server_id: IPAddress, now: float,
                 client: str) -> Reply:
        assert msg.lease_id is not None
        if msg.server_id is not None and msg.server_id != server_id:
            self._drop_offer(msg.lease_id)  # the client chose another server
            self.counters["requests_for_others"] += 1
            return None
        existing = self.leases.get(msg.lease_id)
        if existing is not None and existing.end <= now:
            existing = self._ended(existing)
        if existing is not None:  # a new transaction for a lease it already holds
            if self._wrong_family(msg, existing):
                return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, NO_OPTION)
            return self._lease_reply(MsgType.ACK, msg, server_id, existing, now)
        if msg.lease_id in self.held:
            # RFC 2730 s. 2.4: a lease id is unique per lease. One whose lease has ended
            # but is still held for its guard time cannot start another: that would
            # replace the ended lease (here and in the store) and lose its guard time.
            self.counters["lease_id_in_guard"] += 1
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, Opt.LEASE_ID)
        scope = self._scope_of(msg, now)
        if scope is None:
            # s. 2.2.4: Multicast Scope MUST be included (s. 2.1.5: else Invalid Request);
            # one we do not serve is a valid request we cannot complete
            code = ErrorCode.INVALID_REQUEST if msg.scope is None else \
                ErrorCode.COULD_NOT_COMPLETE
            return self._nak(msg, server_id, code, Opt.SCOPE)
        offer = self._offers.get(msg.lease_id)
        if offer is not None and offer.scope is scope:
            addresses, start, end = offer.addresses, offer.start, offer.end
            self._pop_offer(msg.lease_id, uncharge=False)
        else:
            self._drop_offer(msg.lease_id)
            try:
                addresses, start, end = self._allocate(msg, scope, now,
                                                       (scope.name, client_host(client)))
            except _Refused as refused:
                return self._nak(msg, server_id, refused.code, refused.option)
        lease = Lease(lease_id=msg.lease_id, scope=scope.name,
                      addresses=tuple(address_text(v, scope.start.version) for v in addresses),
                      start=start, end=end, state=ACTIVE, client=client, granted=now,
                      hold_until=end + self.settings.guard, xid=msg.xid)
        self._retake(self.pools[scope.name], lease, addresses)
        self._stage(lease)
        self.scope_counters[scope.name]["granted"] += 1
        return self._reply(MsgType.ACK, msg, server_id, scope, addresses, start, end, now)

    def _renew(self, msg: Message, server_id: IPAddress, now: float) -> Message | bytes:
        assert msg.lease_id is not None
        lease = self.leases.get(msg.lease_id)
        if lease is not None and lease.end <= now:
            lease = self._ended(lease)
        if lease is None:
            return self._nak(msg, server_id, ErrorCode.LEASE_ID_NOT_RECOGNIZED)
        if self._wrong_family(msg, lease):
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, NO_OPTION)
        scope = self.pools[lease.scope].scope
        if not scope.usable(now):
            return self._nak(msg, server_id, ErrorCode.COULD_NOT_COMPLETE, Opt.SCOPE)
        try:
            terms = self._terms(msg, scope, now)
        except _Refused as refused:
            return self._nak(msg, server_id, refused.code, refused.option)
        # RFC 2730 Appendix A: the renewed lease time counts from now (or the start).
        start = lease.start if lease.start > now else now
        end = start + (terms.end - terms.start)
        pool = self.pools[scope.name]
        guard = self.settings.guard
        values = [address_value(a) for a in lease.addresses]
        if any(pool.busy(v, lease.end + guard, end + guard, owner=lease.lease_id)
               for v in values):
            return self._nak(msg, server_id, ErrorCode.COULD_NOT_COMPLETE, Opt.LEASE_TIME)
        renewed = lease.with_changes(end=end, hold_until=end + guard, xid=msg.xid)
        self._retake(pool, renewed)
        self._stage(renewed)
        self.scope_counters[scope.name]["renewed"] += 1
        return self._lease_reply(MsgType.ACK, msg, server_id, renewed, now)

    def _release(self, msg: Message, server_id: IPAddress, now: float) -> Message:
        assert msg.lease_id is not None
        lease = self.leases.get(msg.lease_id)
        if lease is not None and lease.end <= now:
            lease = self._ended(lease)
        if lease is None:
            return self._nak(msg, server_id, ErrorCode.LEASE_ID_NOT_RECOGNIZED)
        if self._wrong_family(msg, lease):
            return self._nak(msg, server_id, ErrorCode.INVALID_REQUEST, NO_OPTION)
        done = lease.with_changes(state=RELEASED, end=min(lease.end, now),
                                  hold_until=now + self.settings.guard, xid=msg.xid)
        self._retake(self.pools[lease.scope], done)
        self._stage(done)
        self.scope_counters[lease.scope]["released"] += 1
        return Message(msgtype=MsgType.ACK, xid=msg.xid, family=msg.family,
                       lease_id=msg.lease_id, server_id=server_id,
                       features=self._reply_features(msg))

    def _lease_reply(self, msgtype: int, msg: Message, server_id: IPAddress, lease: Lease,
                     now: float) -> Message | bytes:
        scope = next(s for s in self.scopes if s.name == lease.scope)
        values = [address_value(a) for a in lease.addresses]
        return self._reply(msgtype, msg, server_id, scope, values, lease.start, lease.end, now)

    def _reply(self, msgtype: int, msg: Message, server_id: IPAddress, scope: ScopeConfig,
               addresses: list[int], start: float, end: float, now: float) -> Message | bytes:
        future = start > now + 1
        remaining = round(end - (start if start > now else now))  # for renewals too
        lease_time = remaining if 0 <= remaining <= INFINITE else _u32(remaining)
        if len(addresses) == 1 and not future and msg.current_time is None \
                and msg.features is None:
            # the usual OFFER or ACK: its bytes without a Message (a third of an exchange)
            assert msg.lease_id is not None
            return wire.encode_lease_reply(msgtype, msg.family, msg.xid, msg.lease_id,
                                           lease_time, server_id, scope.start, addresses[0], 1)
        return Message(
            msgtype=msgtype, xid=msg.xid, family=msg.family, lease_id=msg.lease_id,
            server_id=server_id, scope=scope.start, lease_time=lease_time,
            start_time=int(start) if future else None,
            current_time=int(now) if future or msg.current_time is not None else None,
            address_ranges=coalesce(addresses, scope.start.version),
            features=self._reply_features(msg))

    # -- reporting -----------------------------------------------------------------------
    def scope_status(self, now: float) -> list[dict[str, Any]]:
        out = []
        for scope in self.scopes:
            pool = self.pools[scope.name]
            offered = sum(len(o.addresses) for o in self._offers.values() if o.scope is scope)
            leased = sum(len(le.addresses) for le in self.leases.values()
                         if le.scope == scope.name)
            held = len(pool.windows)
            out.append({**scope.to_json(), "usable": scope.usable(now),
                        "addresses": scope.pool_size(), "leased": leased,
                        "offered": offered, "held": held,
                        "free": max(0, scope.pool_size() - held),
                        "counters": dict(self.scope_counters[scope.name])})
        return out


def _u32(value: int) -> int:
    """A time option's value, clipped: a reply must always encode."""
    return max(0, min(INFINITE, value))


def client_host(client: str) -> str:
    """The host of a "HOST:PORT" client address: what quotas are keyed by (a client can
    change its port, its Client ID and its lease ids at will, not its address)."""
    return client.rpartition(":")[0] or client


def wanted_values(ranges: Iterable[AddressRange], pool: Pool) -> Iterator[int]:
    """The addresses a client names, as integers, only those inside the pool, lazily:
    236 ranges of 65,535 addresses cost what the search looks at, not 15 million
    objects (nor an error for a range running past the end of the address space)."""
    low, high = int(pool.scope.pool_start), int(pool.scope.pool_end)
    for r in ranges:
        first = int(r.start)
        yield from range(max(first, low), min(first + r.count - 1, high) + 1)


def address_value(text: str) -> int:
    """An address as the integer pools count in (inet_pton: ~10x ipaddress's parser)."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return int.from_bytes(socket.inet_pton(family, text), "big")


def address_text(value: int, version: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))

