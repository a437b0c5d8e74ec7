"""SAP (RFC 2974) packet codec: pure functions over bytes, no sockets, no clock.

Layout of the fixed header (RFC 2974 section 6)::

    byte 0: V(3) A(1) R(1) T(1) E(1) C(1)
    byte 1: authentication length, in 32-bit words
    2..3:   message identifier hash, big-endian
    then:   originating source (4 bytes if A=0, 16 if A=1)
    then:   authentication data (4 * auth length bytes)
    then:   optional payload type (NUL-terminated MIME type), then payload

When C is set, everything after the authentication data (payload type and payload)
is zlib-compressed. When E is set it is encrypted and we leave it opaque.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import zlib
from dataclasses import dataclass

SAP_PORT = 9875
SDP_MIME = "application/sdp"
DEFAULT_MAX_INFLATED = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Reason(enum.StrEnum):
    """Why a datagram was rejected; callers use these as counter labels."""

    TRUNCATED = "truncated"
    BAD_VERSION = "bad_version"
    AUTH_OVERRUN = "auth_overrun"
    BAD_AUTH_HEADER = "bad_auth_header"
    INFLATE_FAILED = "inflate_failed"
    INFLATE_TOO_LARGE = "inflate_too_large"
    BAD_PAYLOAD_TYPE = "bad_payload_type"
    EMPTY_PAYLOAD = "empty_payload"


class SapDecodeError(ValueError):
    """A datagram that is not a well-formed SAP packet. The peer is at fault."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class AuthType(enum.IntEnum):
    PGP = 0
    CMS = 1


@dataclass(frozen=True, slots=True)
class AuthData:
    """Authentication data with its subheader decoded (RFC 2974 section 7)."""

    version: int
    padded: bool
    auth_type: int
    signature: bytes  # without the subheader byte and without padding

    def encode(self) -> bytes:
        """Subheader, signature, then padding to a word boundary (the padded bit
        is set exactly when padding is needed; the last pad octet is the count)."""
        pad = (-(1 + len(self.signature))) % 4
        first = (self.version & 0x7) << 5 | (0x10 if pad else 0) | (self.auth_type & 0x0F)
        tail = bytes(pad - 1) + bytes([pad]) if pad else b""
        return bytes([first]) + self.signature + tail


@dataclass(slots=True)  # treated as immutable; not frozen, which costs 4x per datagram
class SapPacket:
    """One decoded SAP datagram. ``payload`` is opaque bytes when ``encrypted``."""

    msg_id_hash: int
    source: IPAddress
    payload: bytes
    payload_type: str | None = SDP_MIME
    deletion: bool = False
    encrypted: bool = False
    compressed: bool = False
    auth: AuthData | None = None
    auth_raw: bytes = b""
    version: int = 1

    @property
    def is_sdp(self) -> bool:
        return self.payload_type is None or self.payload_type.lower() == SDP_MIME


def _decode_auth(raw: bytes) -> AuthData:
    first = raw[0]
    version = first >> 5
    padded = bool(first & 0x10)
    auth_type = first & 0x0F
    body = raw[1:]
    if padded:
        pad = raw[-1]
        if pad == 0 or pad > len(body):
            raise SapDecodeError(Reason.BAD_AUTH_HEADER,
                                 f"padding count {pad} does not fit {len(raw)} auth bytes")
        body = body[:-pad]
    return AuthData(version=version, padded=padded, auth_type=auth_type, signature=body)


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise SapDecodeError(Reason.INFLATE_FAILED, str(exc)) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise SapDecodeError(Reason.INFLATE_TOO_LARGE,
                             f"inflated payload exceeds {limit} bytes")
    if not inflater.eof:
        raise SapDecodeError(Reason.INFLATE_FAILED, "compressed stream is truncated")
    return out


def _split_payload_type(body: bytes) -> tuple[str | None, bytes]:
    # A payload that starts with "v=0" carries no payload type (RFC 2974 section 6).
    if body.startswith(b"v=0"):
        return None, body
    nul = body.find(b"\0", 0, 256)
    if nul < 0:
        raise SapDecodeError(Reason.BAD_PAYLOAD_TYPE,
                             "no NUL-terminated payload type and payload does not start with v=0")
    raw_type = body[:nul]
    try:
        text = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise SapDecodeError(Reason.BAD_PAYLOAD_TYPE, "payload type is not ASCII") from None
    if not text or not text.isprintable() or " " in text:
        raise SapDecodeError(Reason.BAD_PAYLOAD_TYPE, f"payload type {text!r} is not a MIME type")
    return text, body[nul + 1:]


def decode(datagram: bytes, *, max_inflated: int = DEFAULT_MAX_INFLATED) -> SapPacket:
    """Decode one SAP datagram or raise :class:`SapDecodeError`."""
    if len(datagram) < 8:
        raise SapDecodeError(Reason.TRUNCATED, f"{len(datagram)} bytes is shorter than a header")
    flags = datagram[0]
    version = flags >> 5
    if version != 1:
        raise SapDecodeError(Reason.BAD_VERSION, f"version {version}, expected 1")
    ipv6 = bool(flags & 0x10)
    deletion = bool(flags & 0x04)
    encrypted = bool(flags & 0x02)
    compressed = bool(flags & 0x01)
    auth_words = datagram[1]
    msg_id_hash = (datagram[2] << 8) | datagram[3]
    source_len = 16 if ipv6 else 4
    offset = 4 + source_len
    if len(datagram) < offset:
        raise SapDecodeError(Reason.TRUNCATED,
                             f"{len(datagram)} bytes cannot hold a {source_len}-byte source")
    source: IPAddress
    if ipv6:
        source = ipaddress.IPv6Address(datagram[4:offset])
    else:
        source = ipaddress.IPv4Address(datagram[4:offset])
    auth_len = auth_words * 4
    if len(datagram) < offset + auth_len:
        raise SapDecodeError(Reason.AUTH_OVERRUN,
                             f"auth length {auth_words} words overruns the "
                             f"{len(datagram)}-byte packet")
    auth_raw = datagram[offset:offset + auth_len]
    auth = _decode_auth(auth_raw) if auth_len else None
    body = datagram[offset + auth_len:]
    if encrypted:
        # No algorithm is specified; keep the bytes, the caller decides (usually drops).
        return SapPacket(msg_id_hash=msg_id_hash, source=source, payload=body,
                         payload_type=None, deletion=deletion, encrypted=True,
                         compressed=compressed, auth=auth, auth_raw=auth_raw)
    if compressed:
        body = _inflate(body, max_inflated)
    payload_type, payload = _split_payload_type(body)
    if not payload:
        raise SapDecodeError(Reason.EMPTY_PAYLOAD, "packet has no payload")
    return SapPacket(msg_id_hash=msg_id_hash, source=source, payload=payload,
                     payload_type=payload_type, deletion=deletion, encrypted=False,
                     compressed=compressed, auth=auth, auth_raw=auth_raw)


def encode(packet: SapPacket, *, compress: bool | None = None) -> bytes:
    """Encode a packet; ``compress`` overrides ``packet.compressed``."""
    do_compress = packet.compressed if compress is None else compress
    auth_raw = packet.auth.encode() if packet.auth is not None else packet.auth_raw
    if len(auth_raw) % 4 or len(auth_raw) > 255 * 4:
        raise ValueError("authentication data must be a whole number of words, at most 255")
    ipv6 = packet.source.version == 6
    flags = (1 << 5) | (0x10 if ipv6 else 0) | (0x04 if packet.deletion else 0)
    flags |= (0x02 if packet.encrypted else 0) | (0x01 if do_compress else 0)
    if packet.encrypted:
        body = packet.payload
    else:
        body = b""
        if packet.payload_type is not None:
            body = packet.payload_type.encode("ascii") + b"\0"
        body += packet.payload
        if do_compress:
            body = zlib.compress(body, 9)
    header = bytes([flags, len(auth_raw) // 4]) + packet.msg_id_hash.to_bytes(2, "big")
    return header + packet.source.packed + auth_raw + body


def content_hash(payload: bytes) -> int:
    """A nonzero 16-bit message id hash derived from the content alone.

    Stable across restarts, and changes whenever the payload does (up to the
    1-in-65535 collision that a 16-bit field cannot avoid).
    """
    value = int.from_bytes(hashlib.blake2s(payload, digest_size=2).digest(), "big")
    return value or 1


def origin_line(payload: bytes) -> bytes | None:
    """The ``o=`` line of an SDP payload (without line ending), or None."""
    start = 0 if payload.startswith(b"o=") else payload.find(b"\no=")
    if start < 0:
        return None
    if start:
        start += 1
    end = payload.find(b"\n", start)
    line = payload[start:] if end < 0 else payload[start:end]
    return line.rstrip(b"\r")
