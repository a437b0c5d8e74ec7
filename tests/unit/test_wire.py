"""SAP codec: hand-built packets for every header combination, round trips, fuzzing."""

from __future__ import annotations

import ipaddress
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapd import wire
from sapd.wire import Reason, SapDecodeError

SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nc=IN IP4 239.255.1.1/255\r\nt=0 0\r\n"
V4 = ipaddress.IPv4Address("10.0.0.1")
V6 = ipaddress.IPv6Address("2001:db8::1")


def header(flags: int, auth_words: int, msg_hash: int, source: bytes) -> bytes:
    return bytes([flags, auth_words]) + msg_hash.to_bytes(2, "big") + source


def test_ipv4_announcement_with_payload_type() -> None:
    data = header(0x20, 0, 0x1234, V4.packed) + b"application/sdp\0" + SDP
    p = wire.decode(data)
    assert (p.version, p.source, p.msg_id_hash) == (1, V4, 0x1234)
    assert p.payload_type == "application/sdp" and p.payload == SDP
    assert not (p.deletion or p.encrypted or p.compressed) and p.auth is None


def test_ipv6_source_selected_by_a_bit() -> None:
    data = header(0x30, 0, 7, V6.packed) + b"application/sdp\0" + SDP
    p = wire.decode(data)
    assert p.source == V6 and p.payload == SDP


def test_implicit_payload_type_when_payload_starts_with_v0() -> None:
    p = wire.decode(header(0x20, 0, 1, V4.packed) + SDP)
    assert p.payload_type is None and p.is_sdp and p.payload == SDP


def test_reserved_bit_is_ignored() -> None:
    p = wire.decode(header(0x28, 0, 1, V4.packed) + SDP)
    assert p.payload == SDP


def test_deletion_with_origin_line_only() -> None:
    data = header(0x24, 0, 9, V4.packed) + b"application/sdp\0o=- 1 1 IN IP4 10.0.0.1\r\n"
    p = wire.decode(data)
    assert p.deletion and wire.origin_line(p.payload) == b"o=- 1 1 IN IP4 10.0.0.1"


@pytest.mark.parametrize("words", [1, 2, 3, 5, 17])
def test_auth_data_of_several_word_lengths(words: int) -> None:
    sig_len = words * 4 - 1  # subheader byte + signature fills the words exactly
    auth = bytes([0x20 | 0x01]) + bytes(range(sig_len))
    data = header(0x20, words, 2, V4.packed) + auth + b"application/sdp\0" + SDP
    p = wire.decode(data)
    assert p.auth is not None and p.auth.version == 1 and p.auth.auth_type == 1
    assert not p.auth.padded and p.auth.signature == bytes(range(sig_len))
    assert p.auth_raw == auth and p.payload == SDP


def test_auth_padding_is_stripped() -> None:
    # subheader with P set, 3 signature bytes, 4 padding bytes whose last says 4
    auth = bytes([0x30]) + b"\xaa\xbb\xcc" + b"\x00\x00\x00\x04"
    data = header(0x20, 2, 2, V4.packed) + auth + SDP
    p = wire.decode(data)
    assert p.auth is not None and p.auth.padded and p.auth.signature == b"\xaa\xbb\xcc"


def test_compressed_payload_inflates() -> None:
    body = zlib.compress(b"application/sdp\0" + SDP)
    p = wire.decode(header(0x21, 0, 3, V4.packed) + body)
    assert p.compressed and p.payload == SDP and p.payload_type == "application/sdp"


def test_compressed_ipv6_with_auth_and_deletion() -> None:
    auth = bytes([0x20]) + b"sig"
    body = zlib.compress(b"application/sdp\0o=- 1 1 IN IP6 2001:db8::1")
    p = wire.decode(header(0x35, 1, 4, V6.packed) + auth + body)
    assert p.deletion and p.compressed and p.source == V6 and p.auth is not None


def test_encrypted_payload_left_opaque() -> None:
    p = wire.decode(header(0x22, 0, 5, V4.packed) + b"\x01\x02secret")
    assert p.encrypted and p.payload == b"\x01\x02secret" and p.payload_type is None


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x20\x00\x00", Reason.TRUNCATED),
    (header(0x30, 0, 1, V4.packed), Reason.TRUNCATED),
    (header(0x40, 0, 1, V4.packed) + SDP, Reason.BAD_VERSION),
    (header(0x00, 0, 1, V4.packed) + SDP, Reason.BAD_VERSION),
    (header(0x20, 9, 1, V4.packed) + b"1234", Reason.AUTH_OVERRUN),
    (header(0x21, 0, 1, V4.packed) + b"not zlib", Reason.INFLATE_FAILED),
    (header(0x21, 0, 1, V4.packed) + zlib.compress(b"v=0\n" + b"a" * 200_000),
     Reason.INFLATE_TOO_LARGE),
    (header(0x20, 0, 1, V4.packed) + b"no nul terminator here", Reason.BAD_PAYLOAD_TYPE),
    (header(0x20, 0, 1, V4.packed) + b"\xff\xfe\0" + SDP, Reason.BAD_PAYLOAD_TYPE),
    (header(0x20, 0, 1, V4.packed) + b"application/sdp\0", Reason.EMPTY_PAYLOAD),
    (header(0x20, 1, 1, V4.packed) + bytes([0x30, 0, 0, 9]) + SDP, Reason.BAD_AUTH_HEADER),
])
def test_rejections_are_typed(data: bytes, reason: Reason) -> None:
    with pytest.raises(SapDecodeError) as info:
        wire.decode(data)
    assert info.value.reason is reason


def test_inflate_cap_is_configurable() -> None:
    body = zlib.compress(b"application/sdp\0" + SDP)
    with pytest.raises(SapDecodeError) as info:
        wire.decode(header(0x21, 0, 3, V4.packed) + body, max_inflated=20)
    assert info.value.reason is Reason.INFLATE_TOO_LARGE


def test_content_hash_is_deterministic_nonzero_and_tracks_changes() -> None:
    assert wire.content_hash(SDP) == wire.content_hash(bytes(SDP))
    assert wire.content_hash(SDP) != wire.content_hash(SDP.replace(b"s=x", b"s=y"))
    assert all(wire.content_hash(str(i).encode()) != 0 for i in range(20_000))


def test_encode_matches_hand_built_bytes() -> None:
    packet = wire.SapPacket(msg_id_hash=0x1234, source=V4, payload=SDP)
    assert wire.encode(packet) == header(0x20, 0, 0x1234, V4.packed) + b"application/sdp\0" + SDP


sources = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
payloads = st.binary(min_size=1, max_size=600).map(lambda b: b"v=0\n" + b)
auths = st.one_of(st.none(), st.builds(
    wire.AuthData, version=st.just(1), padded=st.just(False),
    auth_type=st.integers(0, 15), signature=st.binary(max_size=60)))


@given(src=sources, h=st.integers(0, 0xFFFF), payload=payloads, deletion=st.booleans(),
       compressed=st.booleans(), auth=auths,
       ptype=st.sampled_from([None, "application/sdp", "text/plain"]))
@settings(max_examples=400)
def test_round_trip(src: wire.IPAddress, h: int, payload: bytes, deletion: bool,
                    compressed: bool, auth: wire.AuthData | None, ptype: str | None) -> None:
    packet = wire.SapPacket(msg_id_hash=h, source=src, payload=payload, payload_type=ptype,
                            deletion=deletion, compressed=compressed, auth=auth)
    out = wire.decode(wire.encode(packet))
    assert (out.msg_id_hash, out.source, out.payload, out.payload_type) == (h, src, payload, ptype)
    assert (out.deletion, out.compressed) == (deletion, compressed)
    if auth is None:
        assert out.auth is None
    else:
        assert out.auth is not None
        assert (out.auth.auth_type, out.auth.signature) == (auth.auth_type, auth.signature)


def test_fuzz_decoder_raises_only_typed_errors() -> None:
    """100,000 mutated and random datagrams: SapDecodeError or a packet, never anything else."""
    rng = random.Random(2974)
    seeds = [
        header(0x20, 0, 1, V4.packed) + b"application/sdp\0" + SDP,
        header(0x30, 1, 2, V6.packed) + bytes([0x20, 1, 2, 3]) + SDP,
        header(0x21, 0, 3, V4.packed) + zlib.compress(b"application/sdp\0" + SDP),
        header(0x24, 0, 4, V4.packed) + b"o=- 1 1 IN IP4 10.0.0.1",
    ]
    outcomes = {"ok": 0, "error": 0}
    for i in range(100_000):
        if i % 10 == 0:
            data = rng.randbytes(rng.randrange(0, 120))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 6)):
                op = rng.randrange(4)
                pos = rng.randrange(len(data)) if data else 0
                if op == 0 and data:
                    data[pos] = rng.randrange(256)
                elif op == 1:
                    data.insert(pos, rng.randrange(256))
                elif op == 2 and data:
                    del data[pos]
                else:
                    data = data[: rng.randrange(len(data) + 1)]
            data = bytes(data)
        try:
            wire.decode(data, max_inflated=4096)
            outcomes["ok"] += 1
        except SapDecodeError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 1000 and outcomes["error"] > 1000
