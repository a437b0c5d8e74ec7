"""Builders for SAP datagrams used across tests (real bytes, built with our encoder)."""

from __future__ import annotations

import ipaddress

from sapd import wire


def sdp_text(session: int = 1, version: int = 1, name: str = "Test", group: str = "239.255.1.1",
             origin: str = "10.0.0.1", extra: str = "") -> str:
    return (f"v=0\r\no=- {session} {version} IN IP4 {origin}\r\ns={name}\r\n"
            f"c=IN IP4 {group}/32\r\nt=0 0\r\n{extra}"
            "m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 L24/48000/2\r\n")


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
