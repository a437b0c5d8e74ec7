"""madcapd under hostile input (issue 13 items 11-13): what one datagram may cost, how
much of a scope one client may hold, and the protocol edges RFC 2730 prescribes."""

from __future__ import annotations

import ipaddress
import struct
import time
import tracemalloc
from pathlib import Path

from madcap import wire
from madcap.leases import MemoryReplyCache
from madcap.pool import scope_from_config
from madcap.server import ServerSettings
from madcap.store.sqlite import SqliteLeaseStore
from madcap.wire import AddressRange, ErrorCode, Message, MsgType, Opt
from tests.madcap_harness import Harness, crashed
from tests.unit.test_madcap_server import (
    SCOPE_ID,
    SERVER,
    SMALL,
    T0,
    addresses,
    lid,
    make,
    request,
    send,
)

WIDE = {"name": "wide", "range": "239.255.0.0/16", "lease_default": 600,
        "lease_max": 86_400}
UNLIMITED = {**WIDE, "max_addresses_per_client": 65_535, "max_offers_per_client": 65_535}


def cpu_seconds_of(server: Harness, data: bytes, client: str, now: float,
                   ) -> tuple[bytes | None, float]:
    """The allocator's CPU time for one datagram (the commit after it not counted),
    and the reply the hub released."""
    start = time.thread_time()
    server.hub.receive(data, client, SERVER, now, client)
    spent = time.thread_time() - start
    sent = server.hub.flush()
    return (sent[0][0] if sent else None), spent


def stalling_request() -> bytes:
    """The 1,469-byte REQUEST of issue 13 item 11: Number of Addresses (1, 1) and 236
    Address Ranges of 65,535 addresses each (15.5 million addresses asked for)."""
    ranges = tuple(AddressRange(ipaddress.IPv4Address(0xEF000000 + i * 0xFFFF), 0xFFFF)
                   for i in range(236))
    data = wire.encode(request(1, num_addresses=(1, 1), address_ranges=ranges))
    assert len(data) == 1469
    return data


# -- item 11: the cost of a message is bounded by what it can be granted ----------------------

def test_request_with_236_huge_address_ranges_stalled_the_loop_and_grew_memory(
        tmp_path: Path) -> None:
    s = make(tmp_path, WIDE)
    data = stalling_request()
    tracemalloc.start()
    try:
        reply, spent = cpu_seconds_of(s, data, "10.0.0.9:40000", T0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reply is not None
    ack = wire.decode(reply)
    assert ack.msgtype == MsgType.ACK and len(addresses(ack)) == 1
    assert spent < 0.010, f"one REQUEST cost {spent * 1000:.1f} ms of CPU"
    assert peak < 2_000_000, f"one REQUEST allocated {peak / 1e6:.1f} MB"


def fill_all_but_middle(tmp_path: Path) -> tuple[Harness, float]:
    """A 65,280-address pool with every address leased for a day except one in the middle,
    whose 60 s lease and guard time are over; the allocation cursor sits at the pool start."""
    s = make(tmp_path, UNLIMITED)
    middle = AddressRange(ipaddress.IPv4Address("239.255.127.128"), 1)
    assert addresses(send(s, request(100_000, lease_time=60, address_ranges=(middle,)))) == \
        ["239.255.127.128"]
    granted = 1
    n = 0
    while granted < 65_280:
        n += 1
        ack = send(s, request(n, lease_time=86_400, num_addresses=(1, 256)),
                   client=f"10.1.{n // 250}.{n % 250}:4000")
        assert ack is not None and ack.msgtype == MsgType.ACK, ack
        granted += len(addresses(ack))
    later = T0 + 60 + 3600 + 1
    s.expire(later)
    s.commit()
    return s, later


def test_discover_against_nearly_full_pool_scanned_the_pool(tmp_path: Path) -> None:
    s, now = fill_all_but_middle(tmp_path)
    discover = wire.encode(Message(msgtype=MsgType.DISCOVER, xid=7, lease_id=lid(200_000),
                                   scope=SCOPE_ID))
    reply, spent = cpu_seconds_of(s, discover, "10.9.9.9:4000", now)
    assert reply is not None
    offer = wire.decode(reply)
    assert addresses(offer) == ["239.255.127.128"]
    # 52 ms of CPU before the fix, ~1 ms after: 10 ms (the fuzzers' per-input budget)
    # tells them apart on a busy machine too
    assert spent < 0.010, f"a DISCOVER against a nearly full pool cost {spent * 1000:.1f} ms"
    # full now: the next one is refused without a scan too
    again = wire.encode(Message(msgtype=MsgType.DISCOVER, xid=8, lease_id=lid(200_001),
                                scope=SCOPE_ID))
    reply, spent = cpu_seconds_of(s, again, "10.9.9.8:4000", now)
    assert reply is None and spent < 0.010


def test_request_with_every_address_of_a_full_pool_wanted_is_bounded(tmp_path: Path) -> None:
    # Wanted addresses that are all taken must not each cost a look-up without end.
    s, now = fill_all_but_middle(tmp_path)
    ranges = tuple(AddressRange(ipaddress.IPv4Address(0xEFFF0000 + i * 0xFFFF), 0xFFFF)
                   for i in range(2))
    data = wire.encode(request(300_000, num_addresses=(1, 1), address_ranges=ranges))
    reply, spent = cpu_seconds_of(s, data, "10.9.9.7:4000", now)
    assert reply is not None and wire.decode(reply).msgtype == MsgType.ACK
    assert spent < 0.010, f"{spent * 1000:.1f} ms"


# -- item 12: per-client quotas and the server's lease bounds ---------------------------------

def test_one_client_took_the_whole_pool_with_255_requests(tmp_path: Path) -> None:
    s = make(tmp_path, WIDE)
    granted = 0
    for n in range(1, 256):  # one host, a new port and lease id each time
        ack = send(s, request(n, num_addresses=(1, 256)), client=f"10.0.0.66:{1000 + n}")
        if ack is not None and ack.msgtype == MsgType.ACK:
            granted += len(addresses(ack))
    assert granted == 1024  # max_addresses_per_client's default
    assert s.counters["client_address_quota"] > 0
    assert s.scope_counters["wide"]["client_address_quota"] > 0
    other = send(s, request(999), client="10.0.0.67:1000")
    assert other is not None and other.msgtype == MsgType.ACK


def test_address_quota_nak_is_error_0_and_grants_between_min_and_desired(
        tmp_path: Path) -> None:
    s = make(tmp_path, {**WIDE, "max_addresses_per_client": 3})
    assert len(addresses(send(s, request(1, num_addresses=(1, 2))))) == 2
    # RFC 2730 s. 3.8: between the minimum and the desired count; one is left of three
    assert len(addresses(send(s, request(2, num_addresses=(1, 5))))) == 1
    nak = send(s, request(3))
    assert nak is not None and nak.error is not None
    # s. 3.17.1: a valid request that the configuration does not let us complete
    assert (nak.error.code, nak.error.option) == (ErrorCode.COULD_NOT_COMPLETE,
                                                  Opt.NUM_ADDRESSES)
    release = send(s, Message(msgtype=MsgType.RELEASE, xid=50, lease_id=lid(1)))
    assert release is not None and release.msgtype == MsgType.ACK
    # released addresses stay taken for the guard time, and stay counted to their client
    nak = send(s, request(4))
    assert nak is not None and nak.msgtype == MsgType.NAK


def test_one_client_held_the_pool_with_255_discovers(tmp_path: Path) -> None:
    s = make(tmp_path, WIDE)
    offers = 0
    for n in range(1, 256):
        reply = send(s, Message(msgtype=MsgType.DISCOVER, xid=n, lease_id=lid(n),
                                scope=SCOPE_ID, num_addresses=(1, 32)),
                     client=f"10.0.0.66:{1000 + n}", multicast=True)
        offers += reply is not None
    assert offers == 16  # max_offers_per_client's default
    assert s.counters["client_offer_quota"] == 255 - 16
    other = send(s, Message(msgtype=MsgType.DISCOVER, xid=1, lease_id=lid(999),
                            scope=SCOPE_ID), client="10.0.0.67:1000", multicast=True)
    assert other is not None and other.msgtype == MsgType.OFFER
    # completing an offer frees its slot: the same host may discover again
    ack = send(s, request(1, xid=500, server_id=SERVER), client="10.0.0.66:1001")
    assert ack is not None and ack.msgtype == MsgType.ACK
    again = send(s, Message(msgtype=MsgType.DISCOVER, xid=501, lease_id=lid(600),
                            scope=SCOPE_ID), client="10.0.0.66:2000", multicast=True)
    assert again is not None and again.msgtype == MsgType.OFFER


def test_quotas_are_configurable_per_scope(tmp_path: Path) -> None:
    cfg = scope_from_config({**WIDE, "max_addresses_per_client": 7,
                             "max_offers_per_client": 2}, 0)
    assert (cfg.max_addresses_per_client, cfg.max_offers_per_client) == (7, 2)
    s = make(tmp_path, {**WIDE, "max_offers_per_client": 1})
    first = send(s, Message(msgtype=MsgType.DISCOVER, xid=1, lease_id=lid(1), scope=SCOPE_ID))
    second = send(s, Message(msgtype=MsgType.DISCOVER, xid=2, lease_id=lid(2), scope=SCOPE_ID))
    assert first is not None and second is None


def test_lease_of_1_second_was_granted_below_lease_min(tmp_path: Path) -> None:
    # RFC 2730 s. 2.2.4: a server may shorten the lease time, never lengthen it, so a lease
    # time below the server's minimum cannot be served: error 0 (s. 3.17.1), option 1.
    s = make(tmp_path, {**SMALL, "lease_min": 60})
    nak = send(s, request(1, lease_time=1))
    assert nak is not None and nak.error is not None
    assert (nak.error.code, nak.error.option) == (ErrorCode.COULD_NOT_COMPLETE, Opt.LEASE_TIME)
    nak = send(s, request(2, lease_time=0))
    assert nak is not None and nak.msgtype == MsgType.NAK
    ack = send(s, request(3, lease_time=60))
    assert ack is not None and ack.lease_time == 60
    renew = send(s, Message(msgtype=MsgType.RENEW, xid=9, lease_id=lid(3), lease_time=59))
    assert renew is not None and renew.error is not None
    assert renew.error.code == ErrorCode.COULD_NOT_COMPLETE
    assert s.counters["lease_below_minimum"] == 3


# -- item 13: protocol edges ---------------------------------------------------------------

def test_request_for_a_lease_in_the_second_before_expiry_raised_struct_error(
        tmp_path: Path) -> None:
    # RFC 2730 s. 3.2: Lease Time is unsigned. A lease whose end has passed but that the
    # once-a-second sweep has not expired yet has ended: a RENEW gets error 3 (s. 2.4),
    # a REQUEST repeating its id error 1 (the id is still in its guard time, see below).
    s = make(tmp_path)
    ack = send(s, request(1, lease_time=60))
    assert ack is not None and ack.lease_time == 60
    again = send(s, request(1, xid=77), T0 + 60.9)
    assert again is not None and again.error is not None
    assert (again.error.code, again.error.option) == (ErrorCode.INVALID_REQUEST, Opt.LEASE_ID)
    send(s, request(2, lease_time=60))
    renew = send(s, Message(msgtype=MsgType.RENEW, xid=78, lease_id=lid(2)), T0 + 60.9)
    assert renew is not None and renew.error is not None
    assert renew.error.code == ErrorCode.LEASE_ID_NOT_RECOGNIZED
    assert send(s, Message(msgtype=MsgType.DISCOVER, xid=79, lease_id=lid(2),
                           scope=SCOPE_ID), T0 + 60.9) is None
    fresh = send(s, request(3), T0 + 61)
    assert fresh is not None and fresh.lease_time is not None and fresh.lease_time > 0


def test_request_reusing_a_released_lease_id_dropped_its_guard_hold(tmp_path: Path) -> None:
    # Found by the stateful test: a REQUEST with the id of a lease released a moment ago
    # replaced the released lease (memory and store row), so after a restart its address
    # lost its guard time (RFC 2730 s. 2.12) and went to another client for times the
    # first one had been granted. RFC 2730 s. 2.4: a lease id MUST be unique per lease;
    # one still held for its guard time is Invalid Request (error 1) naming option 3.
    s = make(tmp_path, guard=120.0)
    first = send(s, request(1))
    assert addresses(first) == ["239.255.0.1"]
    assert send(s, Message(msgtype=MsgType.RELEASE, xid=2, lease_id=lid(1)), T0 + 9) is not None
    reuse = send(s, request(1, xid=3), T0 + 9)
    assert reuse is not None and reuse.error is not None
    assert (reuse.error.code, reuse.error.option) == (ErrorCode.INVALID_REQUEST, Opt.LEASE_ID)
    restarted = crashed(s, T0 + 7)
    other = send(restarted, request(2), T0 + 7)
    assert addresses(other) != ["239.255.0.1"]
    # after the guard time (and the sweep that ends it) the id may start a new lease
    restarted.expire(T0 + 9 + 121)
    later = send(restarted, request(1, xid=4), T0 + 9 + 121)
    assert later is not None and later.msgtype == MsgType.ACK


def test_renew_with_ipv6_family_for_ipv4_lease_got_a_malformed_reply(tmp_path: Path) -> None:
    # RFC 2730 s. 2.1.3: the header's family is the family of every address in the message;
    # a RENEW naming an IPv4 lease in IPv6 is invalid for its context (s. 2.5): error 1.
    s = make(tmp_path)
    send(s, request(1))
    raw = s.exchange(wire.encode(Message(msgtype=MsgType.RENEW, xid=2,
                                         family=wire.FAMILY_IPV6, lease_id=lid(1))),
                     "10.0.0.9:40000", SERVER, T0)
    assert raw is not None
    nak = wire.decode(raw)
    assert nak.error is not None and nak.error.code == ErrorCode.INVALID_REQUEST
    # a REQUEST in IPv6 repeating the IPv4 lease's id: also no reply in the wrong family
    again = s.exchange(wire.encode(Message(
        msgtype=MsgType.REQUEST, xid=3, family=wire.FAMILY_IPV6, lease_id=lid(1),
        scope=ipaddress.IPv6Address("ff15::"))), "10.0.0.9:40000", SERVER, T0)
    assert again is not None
    assert wire.decode(again).msgtype == MsgType.NAK


def test_address_range_past_255_255_255_255_raised(tmp_path: Path) -> None:
    # RFC 2730 s. 3.12 lets a client name the addresses it wants; the server grants from
    # its own pool (addresses beyond the IPv4 space are simply not in it).
    s = make(tmp_path)
    wanted = (AddressRange(ipaddress.IPv4Address("255.255.255.250"), 100),)
    ack = send(s, request(1, num_addresses=(1, 1), address_ranges=wanted))
    assert ack is not None and ack.msgtype == MsgType.ACK and len(addresses(ack)) == 1


def test_request_without_multicast_scope_got_error_0(tmp_path: Path) -> None:
    # RFC 2730 s. 2.2.4: the Multicast Scope option MUST be included in a REQUEST;
    # s. 2.1.5: a message without a required option is an Invalid Request (error 1).
    s = make(tmp_path)
    nak = send(s, Message(msgtype=MsgType.REQUEST, xid=1, lease_id=lid(1)))
    assert nak is not None and nak.error is not None
    assert (nak.error.code, nak.error.option) == (ErrorCode.INVALID_REQUEST, Opt.SCOPE)
    # s. 2.2.2: likewise for DISCOVER (an unknown scope is one we cannot satisfy: silence)
    nak = send(s, Message(msgtype=MsgType.DISCOVER, xid=2, lease_id=lid(2)))
    assert nak is not None and nak.error is not None
    assert (nak.error.code, nak.error.option) == (ErrorCode.INVALID_REQUEST, Opt.SCOPE)
    assert send(s, Message(msgtype=MsgType.DISCOVER, xid=3, lease_id=lid(3),
                           scope=ipaddress.IPv4Address("239.192.0.0"))) is None


def test_unknown_message_type_got_no_reply(tmp_path: Path) -> None:
    # RFC 2730 s. 2.2: a server receiving a message type it does not recognize MUST
    # generate an Invalid Request error; s. 2.6: answer it with a NAK (type 6, which no
    # server answers, so there is no NAK loop). The RFC names no option: 0xFFFF.
    s = make(tmp_path)
    for msgtype in (0, 9, 255):
        nak = send(s, Message(msgtype=msgtype, xid=msgtype, lease_id=lid(1)))
        assert nak is not None and nak.msgtype == MsgType.NAK and nak.error is not None
        assert (nak.error.code, nak.error.option) == (ErrorCode.INVALID_REQUEST, 0xFFFF)
    assert s.counters["unknown_type"] == 3
    # without a Lease Identifier there is nothing a NAK could echo (s. 2.2.6): dropped
    raw = struct.pack(">BBHI", 0, 9, 1, 5) + b"\0\0\0\0"
    assert s.exchange(raw, "10.0.0.9:40000", SERVER, T0) is None


def test_quota_defaults(tmp_path: Path) -> None:
    store = SqliteLeaseStore(tmp_path / "x.sqlite3")
    s = Harness([scope_from_config(WIDE, 0)], store, T0, ServerSettings())
    assert s.scopes[0].max_addresses_per_client == 1024
    assert s.scopes[0].max_offers_per_client == 16


def getinfo(n: int) -> bytes:
    return wire.encode(Message(msgtype=MsgType.GETINFO, xid=n, lease_id=lid(n),
                               option_request=(Opt.SCOPE_LIST,)))


def cache_of(server: Harness) -> MemoryReplyCache:
    cache = server.store.reply_cache()
    assert isinstance(cache, MemoryReplyCache)
    return cache


def test_clock_step_back_stopped_the_response_cache_sweep(tmp_path: Path) -> None:
    # Found by the soak: the sweep stops at the first entry not yet stale, so after the
    # clock stepped back every entry behind the ones stamped "in the future" stayed, and
    # the cache grew with every message (113,778 entries after 300,000 inputs).
    s = make(tmp_path)
    for n in range(100):
        s.exchange(getinfo(n), "10.0.0.9:4000", SERVER, T0 + n * 0.1)
    now = T0 + 10 - 600  # NTP steps the clock back ten minutes
    for n in range(100, 1100):
        now += 0.1
        s.exchange(getinfo(n), "10.0.0.9:4000", SERVER, now)
        s.expire(now)
    assert len(cache_of(s)) <= 601  # what the last 60 s brought (RFC 2730 s. 2.1.4)


def test_response_cache_is_capped(tmp_path: Path) -> None:
    # RFC 2730 s. 2.1.4 lets the cache interval shrink "according to resource
    # constraints": a flood of distinct requests must not grow memory without bound.
    s = make(tmp_path, response_cache_entries=50)
    for n in range(200):
        s.exchange(getinfo(n), "10.0.0.9:4000", SERVER, T0 + n * 0.01)
    assert len(cache_of(s)) == 50
    assert s.counters["response_cache_evictions"] == 150
    # the newest are still answered from the cache
    s.exchange(getinfo(199), "10.0.0.9:4000", SERVER, T0 + 2.5)
    assert s.counters["retransmissions"] == 1
