"""Read UDP datagrams out of a capture file (classic pcap or pcapng), for offline decoding.

Only what ``sapctl decode --pcap`` needs: Ethernet (with VLAN tags), Linux cooked
(SLL, SLL2) and raw IP link types; IPv4 (unfragmented or first fragment) and IPv6
(with the common extension headers); UDP.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229


class CaptureError(ValueError):
    """The file is not a capture we can read."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    index: int  # 1-based frame number, as Wireshark counts
    timestamp: float
    source: str
    source_port: int
    destination: str
    destination_port: int
    payload: bytes


def _frames(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    """Yield (linktype, timestamp, frame) from pcap or pcapng bytes."""
    if len(data) < 24:
        raise CaptureError("file too short to be a capture")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                 b"\xa1\xb2\x3c\x4d"):
        endian = "<" if magic[0] in (0xD4, 0x4D) else ">"
        nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF
        offset = 24
        while offset + 16 <= len(data):
            sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, offset)
            offset += 16
            yield linktype, sec + frac / (1e9 if nanos else 1e6), data[offset:offset + caplen]
            offset += caplen
        return
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng_frames(data)
        return
    raise CaptureError("not a pcap or pcapng file")


def _pcapng_frames(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    endian = "<"
    linktypes: list[int] = []
    offset = 0
    while offset + 12 <= len(data):
        block_type = struct.unpack_from(endian + "I", data, offset)[0]
        if block_type == 0x0A0D0D0A:  # section header: learn the byte order
            endian = "<" if data[offset + 8:offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes = []
        length = struct.unpack_from(endian + "I", data, offset + 4)[0]
        if length < 12 or offset + length > len(data):
            break
        body = data[offset + 8:offset + length - 4]
        if block_type == 1:  # interface description
            linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
        elif block_type == 6 and len(body) >= 20:  # enhanced packet
            iface, ts_hi, ts_lo, caplen, _ = struct.unpack_from(endian + "IIIII", body, 0)
            if iface < len(linktypes):
                stamp = ((ts_hi << 32) | ts_lo) / 1e6
                yield linktypes[iface], stamp, body[20:20 + caplen]
        elif block_type == 3 and linktypes:  # simple packet
            yield linktypes[0], 0.0, body[4:]
        offset += length


def _network_layer(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(ethertype, packet) for the frame's network layer."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack_from(">H", frame, 12)[0]
        offset = 14
        while ethertype in (0x8100, 0x88A8) and len(frame) >= offset + 4:
            ethertype = struct.unpack_from(">H", frame, offset + 2)[0]
            offset += 4
        return ethertype, frame[offset:]
    if linktype == LINKTYPE_LINUX_SLL and len(frame) >= 16:
        return struct.unpack_from(">H", frame, 14)[0], frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= 20:
        return struct.unpack_from(">H", frame, 0)[0], frame[20:]
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) and frame:
        return (0x86DD if frame[0] >> 4 == 6 else 0x0800), frame
    return None


def _udp(ethertype: int, packet: bytes) -> tuple[str, str, bytes] | None:
    if ethertype == 0x0800 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        frag = struct.unpack_from(">H", packet, 6)[0]
        if packet[9] != 17 or frag & 0x1FFF:
            return None
        total = struct.unpack_from(">H", packet, 2)[0]
        return (str(ipaddress.IPv4Address(packet[12:16])),
                str(ipaddress.IPv4Address(packet[16:20])), packet[ihl:total or None])
    if ethertype == 0x86DD and len(packet) >= 40:
        next_header, offset = packet[6], 40
        while next_header in (0, 43, 60) and len(packet) >= offset + 8:
            next_header = packet[offset]
            offset += (packet[offset + 1] + 1) * 8
        if next_header != 17:
            return None
        return (str(ipaddress.IPv6Address(packet[8:24])),
                str(ipaddress.IPv6Address(packet[24:40])), packet[offset:])
    return None


def udp_datagrams(data: bytes, port: int | None = None) -> Iterator[UdpDatagram]:
    """Every UDP datagram in the capture's bytes, optionally only those to or from
    ``port``. The caller reads the file (bounded: sapd.plumbing.files)."""
    for index, (linktype, stamp, frame) in enumerate(_frames(data), start=1):
        layer = _network_layer(linktype, frame)
        if layer is None:
            continue
        found = _udp(*layer)
        if found is None or len(found[2]) < 8:
            continue
        src, dst, segment = found
        sport, dport, length = struct.unpack_from(">HHH", segment, 0)
        if port is not None and port not in (sport, dport):
            continue
        yield UdpDatagram(index, stamp, src, sport, dst, dport, segment[8:length or None])
