"""MADCAP codec: vectors built from RFC 2730's layouts, round trips, fuzzing."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madcap import wire
from madcap.wire import (
    AddressRange,
    ErrorCode,
    ErrorInfo,
    Features,
    MadcapDecodeError,
    Message,
    MsgType,
    Reason,
    ScopeEntry,
    ScopeName,
)

LID = bytes([0]) + bytes(range(0x10, 0x20))  # type 0 + 16 octets
SERVER = ipaddress.IPv4Address("192.0.2.10")
V4 = ipaddress.IPv4Address


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


LID_OPT = "0003 0011" + LID.hex()

GETINFO = h("00 08 0001 0A0B0C0D" + LID_OPT + "0005 0002 0009 | 0008 0002 656E | 00000000")
ACK_GETINFO = h("00 05 0001 0A0B0C0D | 0002 0006 0001 C000020A" + LID_OPT
                + "0009 0015 01 EFFF0000 EFFFFFFF 10 01 80 02 656E 05 4C6F63616C | 00000000")
REQUEST = h("00 03 0001 0A0B0C0E | 0001 0004 00000E10" + LID_OPT + "0004 0004 EFC00000"
            + "00000000")
ACK_REQUEST = h("00 05 0001 0A0B0C0E | 0001 0004 00000E10 | 0002 0006 0001 C000020A"
                + LID_OPT + "0004 0004 EFC00000 | 000A 0006 EFC00001 0001 | 00000000")
NAK = h("00 06 0001 0A0B0C0E | 0002 0006 0001 C000020A" + LID_OPT
        + "0010 0004 0000 0004 | 00000000")


def test_getinfo_vector() -> None:
    assert len(GETINFO) == 45
    m = wire.decode(GETINFO)
    assert (m.msgtype, m.xid, m.family) == (MsgType.GETINFO, 0x0A0B0C0D, 1)
    assert m.lease_id == LID and m.option_request == (9,) and m.language == "en"
    assert wire.encode(m) == GETINFO


def test_ack_to_getinfo_with_scope_list() -> None:
    assert len(ACK_GETINFO) == 68
    m = wire.decode(ACK_GETINFO)
    assert m.server_id == SERVER
    assert m.scope_list == (ScopeEntry(V4("239.255.0.0"), V4("239.255.255.255"), 16,
                                       (ScopeName("en", "Local", True),)),)
    assert wire.encode(m) == ACK_GETINFO


def test_request_and_ack_vectors() -> None:
    assert (len(REQUEST), len(ACK_REQUEST)) == (49, 69)
    req = wire.decode(REQUEST)
    assert req.lease_time == 3600 and req.scope == V4("239.192.0.0")
    ack = wire.decode(ACK_REQUEST)
    assert ack.address_ranges == (AddressRange(V4("239.192.0.1"), 1),)
    assert wire.encode(req) == REQUEST and wire.encode(ack) == ACK_REQUEST


def test_nak_vector() -> None:
    assert len(NAK) == 51
    m = wire.decode(NAK)
    assert m.error == ErrorInfo(ErrorCode.COULD_NOT_COMPLETE, option=4)
    assert wire.encode(m) == NAK


@pytest.mark.parametrize("msgtype", list(MsgType))
def test_every_message_type_round_trips(msgtype: MsgType) -> None:
    m = Message(msgtype=msgtype, xid=7, lease_id=LID)
    assert wire.decode(wire.encode(m)) == m


def test_every_option_ipv4() -> None:
    m = Message(
        msgtype=MsgType.ACK, xid=1, lease_id=LID, lease_time=60, server_id=SERVER,
        scope=V4("239.255.0.0"), option_request=(9, 12, 11), start_time=2_000_000_000,
        num_addresses=(1, 4), language="en-GB",
        scope_list=(ScopeEntry(V4("239.255.0.0"), V4("239.255.255.255"), 255,
                               (ScopeName("en", "Local", True), ScopeName("de", "Lokal"))),),
        address_ranges=(AddressRange(V4("239.255.0.1"), 2), AddressRange(V4("239.255.0.9"), 1)),
        current_time=1_999_999_990, features=Features((0, 1, 2), (), (1,)),
        retry_time=2_000_000_100, min_lease_time=30, max_start_time=2_000_000_500,
        nesting=b"\x01\x00", unknown=((4000, b"xyz"),))
    assert wire.decode(wire.encode(m)) == m


def test_every_option_ipv6() -> None:
    scope = ipaddress.IPv6Address("ff15::")
    m = Message(
        msgtype=MsgType.ACK, xid=2, family=wire.FAMILY_IPV6, lease_id=LID,
        server_id=ipaddress.IPv6Address("2001:db8::1"), scope=scope, lease_time=10,
        scope_list=(ScopeEntry(scope, ipaddress.IPv6Address("ff15::ffff"), 16,
                               (ScopeName("en", "Site", True),)),),
        address_ranges=(AddressRange(ipaddress.IPv6Address("ff15::8000:1"), 3),))
    assert wire.decode(wire.encode(m)) == m


@pytest.mark.parametrize("error", [
    ErrorInfo(ErrorCode.COULD_NOT_COMPLETE, option=0xFFFF),
    ErrorInfo(ErrorCode.INVALID_REQUEST, option=7),
    ErrorInfo(ErrorCode.EXCESSIVE_CLOCK_SKEW, server_time=1_700_000_000),
    ErrorInfo(ErrorCode.LEASE_ID_NOT_RECOGNIZED),
    ErrorInfo(ErrorCode.REQUIRED_FEATURE_NOT_SUPPORTED, features=(0, 2)),
    ErrorInfo(1500, extra=b"exp"),
])
def test_error_codes(error: ErrorInfo) -> None:
    m = Message(msgtype=MsgType.NAK, xid=3, lease_id=LID, server_id=SERVER, error=error)
    assert wire.decode(wire.encode(m)).error == error


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00\x08\x00\x01", Reason.TOO_SHORT),
    (h("01 08 0001 00000001 00000000"), Reason.BAD_VERSION),
    (h("00 08 0009 00000001 00000000"), Reason.BAD_FAMILY),
    (h("00 08 0001 00000001 0003 0020 00 00000000"), Reason.OPTION_OVERRUN),
    (h("00 08 0001 00000001 0001 0002 0000 00000000"), Reason.BAD_LENGTH),
    (h("00 08 0001 00000001 0003 0001 00 0003 0001 00 00000000"), Reason.DUPLICATE_OPTION),
    (h("00 08 0001 00000001 0003 0001 00 0005 0002 0009"), Reason.MISSING_END),
    (h("00 08 0001 00000001 0003 0001 00 00000000 FF"), Reason.BAD_LENGTH),
    (h("00 05 0001 00000001 0002 0006 0009 C000020A 00000000"), Reason.BAD_FAMILY),
    (h("00 05 0001 00000001 000A 0005 EFC0000100 00000000"), Reason.BAD_LENGTH),
    (h("00 05 0001 00000001 0009 0004 01 EFFF0000 00000000"), Reason.BAD_LENGTH),
    (h("00 05 0001 00000001 000C 0004 0001 0000 00000000"), Reason.BAD_LENGTH),
    (h("00 08 0001 00000001 0008 0002 FFFE 00000000"), Reason.BAD_VALUE),
])
def test_malformed_is_typed(data: bytes, reason: Reason) -> None:
    with pytest.raises(MadcapDecodeError) as info:
        wire.decode(data)
    assert info.value.reason is reason


addresses = st.integers(0, 2**32 - 1).map(V4)


@given(xid=st.integers(0, 2**32 - 1), msgtype=st.integers(1, 8),
       lid=st.binary(min_size=1, max_size=40), lease=st.none() | st.integers(0, 2**32 - 1),
       scope=st.none() | addresses,
       ranges=st.none() | st.lists(st.builds(AddressRange, addresses, st.integers(1, 65535)),
                                   max_size=4).map(tuple),
       features=st.none() | st.builds(Features, *(st.lists(st.integers(0, 5), max_size=3)
                                                   .map(tuple) for _ in range(3))),
       num=st.none() | st.tuples(st.integers(0, 65535), st.integers(0, 65535)))
@settings(max_examples=400)
def test_round_trip_property(xid: int, msgtype: int, lid: bytes, lease: int | None,
                             scope: V4 | None, ranges: tuple[AddressRange, ...] | None,
                             features: Features | None, num: tuple[int, int] | None) -> None:
    m = Message(msgtype=msgtype, xid=xid, lease_id=lid, lease_time=lease, scope=scope,
                address_ranges=ranges, features=features, num_addresses=num)
    assert wire.decode(wire.encode(m)) == m


def test_fuzz_decoder_raises_only_typed_errors() -> None:
    rng = random.Random(2730)
    seeds = [GETINFO, ACK_GETINFO, REQUEST, ACK_REQUEST, NAK]
    ok = bad = 0
    for i in range(100_000):
        if i % 10 == 0:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            buf = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 5)):
                pos = rng.randrange(len(buf)) if buf else 0
                op = rng.randrange(3)
                if op == 0 and buf:
                    buf[pos] = rng.randrange(256)
                elif op == 1:
                    buf.insert(pos, rng.randrange(256))
                elif buf:
                    del buf[pos]
            data = bytes(buf)
        try:
            wire.decode(data)
            ok += 1
        except MadcapDecodeError:
            bad += 1
    assert ok > 1000 and bad > 1000


def test_request_key_reads_xid_type_and_lease_id_without_decoding() -> None:
    import ipaddress  # noqa: PLC0415

    from madcap.wire import Message, MsgType, decode, encode, request_key  # noqa: PLC0415

    raw = encode(Message(msgtype=MsgType.REQUEST, xid=77, lease_id=b"\0" + b"\7" * 16,
                         scope=ipaddress.ip_address("239.255.0.0"), lease_time=60))
    msg = decode(raw)
    assert request_key(raw) == (msg.xid, msg.msgtype, msg.lease_id)
    assert request_key(raw[:10]) is None
    assert request_key(raw[:8] + b"\0\0\0\0") is None  # End before any lease id
def test_the_usual_reply_encoded_without_a_message_is_the_same_bytes() -> None:
    # encode_lease_reply is the server's fast path for OFFER and ACK: it must be encode()
    # of the same message, byte for byte, whatever the families and values
    rng = random.Random(7)
    for _ in range(3000):
        v6 = rng.random() < 0.3
        make = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
        scope: wire.IPAddress = make(rng.getrandbits(128 if v6 else 32))
        server_id: wire.IPAddress = ipaddress.IPv6Address(rng.getrandbits(128)) \
            if rng.random() < 0.3 else ipaddress.IPv4Address(rng.getrandbits(32))
        first, count = rng.getrandbits(128 if v6 else 32), rng.randint(1, 0xFFFF)
        lease_id = rng.randbytes(rng.randint(1, 300))
        msgtype, family = rng.choice((MsgType.OFFER, MsgType.ACK)), rng.choice((1, 2))
        xid, lease_time = rng.getrandbits(32), rng.getrandbits(32)
        expected = wire.encode(Message(
            msgtype=msgtype, xid=xid, family=family, lease_id=lease_id, server_id=server_id,
            scope=scope, lease_time=lease_time,
            address_ranges=(wire.AddressRange(make(first), count),)))
        assert wire.encode_lease_reply(msgtype, family, xid, lease_id, lease_time, server_id,
                                       scope, first, count) == expected
