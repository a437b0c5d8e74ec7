"""Builders for SAP datagrams used across tests (real bytes, built with our encoder)."""

from __future__ import annotations

import ipaddress

from sapd import wire


def sdp_text(session: int = 1, version: int = 1, name: str = "Test", group: str = "239.255.1.1",
             origin: str = "10.0.0.1", extra: str = "") -> str:
    return (f"v=0\r\no=- {session} {version} IN IP4 {origin}\r\ns={name}\r\n"
            f"c=IN IP4 {group}/32\r\nt=0 0\r\n{extra}"
            "m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 L24/48000/2\r\n")


def aes67_sdp_text(session: int = 1, version: int = 1, name: str = "AVIO-USB : 2",
                   group: str = "239.69.1.1", origin: str = "10.0.0.1") -> str:
    """A 13-line AES67 stream as Dante and RAVENNA devices announce it: c= with a TTL,
    a PTP clock domain, source-filter, rtpmap, ptime, ts-refclk and mediaclk."""
    return (f"v=0\r\no=- {session} {version} IN IP4 {origin}\r\ns={name}\r\n"
            f"c=IN IP4 {group}/32\r\nt=0 0\r\na=clock-domain:PTPv2 0\r\n"
            "m=audio 5004 RTP/AVP 97\r\n"
            f"a=source-filter: incl IN IP4 {group} {origin}\r\n"
            "a=recvonly\r\na=rtpmap:97 L24/48000/2\r\na=ptime:1\r\n"
            "a=ts-refclk:ptp=IEEE1588-2008:00-1D-C1-FF-FE-0A-1B-2C:0\r\n"
            "a=mediaclk:direct=0\r\n")


def announce(sdp: str, source: str = "10.0.0.1", msg_hash: int | None = None,
             deletion: bool = False, **kw: object) -> bytes:
    payload = sdp.encode()
    return wire.encode(wire.SapPacket(
        msg_id_hash=wire.content_hash(payload) if msg_hash is None else msg_hash,
        source=ipaddress.ip_address(source), payload=payload, deletion=deletion,
        **kw))  # type: ignore[arg-type]


def delete(session: int = 1, version: int = 1, source: str = "10.0.0.1",
           origin: str = "10.0.0.1") -> bytes:
    return announce(f"o=- {session} {version} IN IP4 {origin}\r\n", source=source, deletion=True)
