"""Fuzzed SAP datagrams for the whole-path fuzz tests: mostly well-framed packets with
hostile content (so the SDP validator and the lifecycle see them, not only the header
check), plus compressed, zlib bombs, truncated, authenticated, encrypted, IPv6-sourced,
deletions, and byte-level mutations of all of these. Deterministic for a seed."""

from __future__ import annotations

import ipaddress
import random
import zlib
from collections.abc import Iterator

from sapd import wire

SUPERSCRIPT_TWO = "\u00b2"
HOSTILE_VALUES = (
    SUPERSCRIPT_TWO, "\u0663", "\uff11", "9" * 5000, "0" * 5000 + "7", "\0", "", " ", "/",
    "-1", "0", "65536", "4294967296", "18446744073709551616", "999999999999990",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "255.255.255.255", "239.255.255.255",
    "ff0e::1", "::", "\u00e9", "\xff", "IP5", "\r", "=", "a=b", "1e5", "0x10", "1" * 4300)

# o= numbers of any length: VLC writes 20 digits, above 2**63 (issue 13 item 1).
_SESSIONS = 400
_SOURCES_V4 = [f"10.{i // 256}.{i % 256}.1" for i in range(60)]
_SOURCES_V6 = [f"2001:db8::{i:x}" for i in range(1, 20)]
_GROUPS = ("239.255.1.1/32", "239.69.1.1/255/4", "224.2.1.1/16", "239.193.0.1/1",
           "ff0e::1:1", "ff08::2:1/3", "ff04::1", "ff02::1", "10.0.0.9", "host.example")


def _sdp(rng: random.Random) -> str:
    session = rng.randrange(_SESSIONS)
    version = rng.choice((1, 1, 2, 3, rng.randrange(1 << 62), rng.randrange(1 << 64, 1 << 66),
                          17201912864673439254 + rng.randrange(100)))
    group = rng.choice(_GROUPS)
    family = "IP6" if ":" in group.split("/")[0] else "IP4"
    lines = ["v=0", f"o=- {session} {version} IN IP4 10.0.0.1", f"s=Fuzz {session}",
             f"c=IN {family} {group}"]
    if rng.random() < 0.2:
        lines.append(f"b=AS:{rng.randrange(10000)}")
    start = rng.choice((0, 0, 3_900_000_000, 3_800_000_000))
    stop = 0 if not start else start + rng.choice((0, 3600, 10 ** 9))
    lines.append(f"t={start} {stop}")
    if rng.random() < 0.1:
        lines.append("r=7d 1h 0 25h")
    if rng.random() < 0.3:
        lines.append("a=tool:fuzz")
    for media in range(rng.choice((0, 1, 1, 2))):
        lines.append(f"m=audio {5004 + media * 2} RTP/AVP 96")
        lines.append("a=rtpmap:96 L24/48000/2")
    if rng.random() < 0.6:  # one hostile token in one line
        index = rng.randrange(len(lines))
        tokens = lines[index][2:].replace("/", " / ").split(" ")
        tokens[rng.randrange(len(tokens))] = rng.choice(HOSTILE_VALUES)
        lines[index] = lines[index][:2] + " ".join(tokens).replace(" / ", "/")
    if rng.random() < 0.05:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(("x=unknown", "", "garbage")))
    return "\r\n".join(lines) + rng.choice(("\r\n", "\n", ""))


def _bomb(size: int) -> bytes:
    return zlib.compress(b"application/sdp\0v=0\r\n" + b"a=x\r\n" * (size // 5), 9)


_BOMBS = (_bomb(70_000), _bomb(1_000_000), _bomb(10_000_000))


def _packet(rng: random.Random) -> bytes:
    v6 = rng.random() < 0.2
    source = ipaddress.ip_address(rng.choice(_SOURCES_V6 if v6 else _SOURCES_V4))
    deletion = rng.random() < 0.1
    if deletion and rng.random() < 0.7:
        payload = f"o=- {rng.randrange(_SESSIONS)} {rng.choice((1, 2, 3))} IN IP4 10.0.0.1"
        if rng.random() < 0.3:
            payload = payload.replace("1 IN", rng.choice(HOSTILE_VALUES) + " IN")
        payload_bytes = payload.encode("utf-8", "surrogatepass") + b"\r\n"
    else:
        payload_bytes = _sdp(rng).encode("utf-8", "surrogatepass")
    auth = None
    auth_raw = b""
    roll = rng.random()
    if roll < 0.05:
        auth = wire.AuthData(1, False, rng.choice((0, 1, 7)), rng.randbytes(rng.randrange(40)))
    elif roll < 0.08:  # raw words with any subheader, padding bit and count
        auth_raw = rng.randbytes(4 * rng.randrange(1, 8))
    packet = wire.SapPacket(
        msg_id_hash=(0 if rng.random() < 0.03 else
                     rng.choice((rng.randrange(1, 65536), wire.content_hash(payload_bytes)))),
        source=source, payload=payload_bytes, deletion=deletion,
        payload_type=(wire.SDP_MIME if rng.random() < 0.6 else
                      None if rng.random() < 0.9 else "text/plain"),
        encrypted=rng.random() < 0.02, auth=auth, auth_raw=auth_raw)
    return wire.encode(packet, compress=rng.random() < 0.15)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(5)
        if kind == 0 and buf:  # flip bits, often in the header
            index = rng.randrange(min(len(buf), 24) if rng.random() < 0.5 else len(buf))
            buf[index] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            del buf[rng.randrange(len(buf) + 1):]
        elif kind == 2:  # insert bytes
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 16))
        elif kind == 3 and buf:  # overwrite a byte with a boundary value
            buf[rng.randrange(len(buf))] = rng.choice((0, 0x0A, 0x0D, 0x20, 0x7F, 0xFF))
        else:  # duplicate a slice
            start = rng.randrange(len(buf) + 1)
            buf[start:start] = buf[start:start + rng.randrange(64)]
    return bytes(buf)


def datagrams(count: int, seed: int = 13) -> Iterator[bytes]:
    """``count`` fuzzed datagrams, the same ones for the same seed."""
    rng = random.Random(seed)
    previous: list[bytes] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.55:
            data = _packet(rng)
        elif roll < 0.80:
            data = _mutate(rng, _packet(rng))
        elif roll < 0.90 and previous:  # a re-announcement: the fast path and refreshes
            data = rng.choice(previous)
        elif roll < 0.93:  # a zlib bomb behind a valid header
            header = wire.encode(wire.SapPacket(
                msg_id_hash=rng.randrange(1, 65536), payload=b"",
                source=ipaddress.ip_address(rng.choice(_SOURCES_V4)), payload_type=None))
            data = bytes([header[0] | 0x01]) + header[1:] + rng.choice(_BOMBS)
        elif roll < 0.96:  # truncated anywhere in or after the header
            data = _packet(rng)[:rng.randrange(0, 40)]
        else:  # noise
            data = rng.randbytes(rng.randrange(0, 1500))
        if len(previous) < 2000:
            previous.append(data)
        else:
            previous[rng.randrange(len(previous))] = data
        yield data
