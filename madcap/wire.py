"""MADCAP (RFC 2730) message codec: pure functions over bytes.

Fixed header: version (0), message type, address family (1 IPv4, 2 IPv6), xid; then
options as (u16 code, u16 length, value) ending with End (code 0, length 0).
Addresses inside options use the header's family, except Server Identifier which
carries its own.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import operator
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

PORT = 2535
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class MsgType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    RENEW = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    GETINFO = 8


class Opt(enum.IntEnum):
    END = 0
    LEASE_TIME = 1
    SERVER_ID = 2
    LEASE_ID = 3
    SCOPE = 4
    OPTION_REQUEST = 5
    START_TIME = 6
    NUM_ADDRESSES = 7
    LANGUAGE = 8
    SCOPE_LIST = 9
    ADDRESS_RANGES = 10
    CURRENT_TIME = 11
    FEATURES = 12
    RETRY_TIME = 13
    MIN_LEASE_TIME = 14
    MAX_START_TIME = 15
    ERROR = 16
    NESTING = 17  # RFC 2907 Multicast Scope Nesting State


class ErrorCode(enum.IntEnum):
    COULD_NOT_COMPLETE = 0
    INVALID_REQUEST = 1
    EXCESSIVE_CLOCK_SKEW = 2
    LEASE_ID_NOT_RECOGNIZED = 3
    REQUIRED_FEATURE_NOT_SUPPORTED = 4


class Feature(enum.IntEnum):
    SERVER_MOBILITY = 0
    RETRY_AFTER = 1
    SHARED_LEASE_ID = 2


class Reason(enum.StrEnum):
    TOO_SHORT = "too_short"
    BAD_VERSION = "bad_version"
    BAD_FAMILY = "bad_family"
    OPTION_OVERRUN = "option_overrun"
    BAD_LENGTH = "bad_length"
    DUPLICATE_OPTION = "duplicate_option"
    MISSING_END = "missing_end"
    BAD_VALUE = "bad_value"


class MadcapDecodeError(ValueError):
    """A datagram that is not a well-formed MADCAP message (the peer is at fault)."""

    def __init__(self, reason: Reason, detail: str, option: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.option = option


@dataclass(frozen=True, slots=True)
class ScopeName:
    language: str
    name: str
    default: bool = False


@dataclass(frozen=True, slots=True)
class ScopeEntry:
    scope_id: IPAddress  # the scope's first address
    last: IPAddress
    ttl: int
    names: tuple[ScopeName, ...] = ()


@dataclass(frozen=True, slots=True)
class AddressRange:
    start: IPAddress
    count: int

    def addresses(self) -> list[IPAddress]:
        return [self.start + i for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class Features:
    supported: tuple[int, ...] = ()
    requested: tuple[int, ...] = ()
    required: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: int
    option: int | None = None  # codes 0 and 1: the option at fault (0xFFFF: none)
    server_time: int | None = None  # code 2
    features: tuple[int, ...] = ()  # code 4
    extra: bytes = b""  # experimental codes: opaque


@dataclass(frozen=True, slots=True)
class Message:
    msgtype: int
    xid: int
    family: int = FAMILY_IPV4
    lease_id: bytes | None = None
    lease_time: int | None = None
    server_id: IPAddress | None = None
    scope: IPAddress | None = None
    option_request: tuple[int, ...] | None = None
    start_time: int | None = None
    num_addresses: tuple[int, int] | None = None  # (minimum, desired)
    language: str | None = None
    scope_list: tuple[ScopeEntry, ...] | None = None
    address_ranges: tuple[AddressRange, ...] | None = None
    current_time: int | None = None
    features: Features | None = None
    retry_time: int | None = None
    min_lease_time: int | None = None
    max_start_time: int | None = None
    error: ErrorInfo | None = None
    nesting: bytes | None = None
    unknown: tuple[tuple[int, bytes], ...] = field(default=())

    def present(self) -> list[int]:
        """Codes of the options this message carries."""
        return [code for code, name in _FIELD_OF.items() if getattr(self, name) is not None]


_FIELD_OF = {
    Opt.LEASE_TIME: "lease_time", Opt.SERVER_ID: "server_id", Opt.LEASE_ID: "lease_id",
    Opt.SCOPE: "scope", Opt.OPTION_REQUEST: "option_request", Opt.START_TIME: "start_time",
    Opt.NUM_ADDRESSES: "num_addresses", Opt.LANGUAGE: "language",
    Opt.SCOPE_LIST: "scope_list", Opt.ADDRESS_RANGES: "address_ranges",
    Opt.CURRENT_TIME: "current_time", Opt.FEATURES: "features",
    Opt.RETRY_TIME: "retry_time", Opt.MIN_LEASE_TIME: "min_lease_time",
    Opt.MAX_START_TIME: "max_start_time", Opt.ERROR: "error", Opt.NESTING: "nesting",
}
_U32_OPTIONS = {Opt.LEASE_TIME, Opt.START_TIME, Opt.CURRENT_TIME, Opt.RETRY_TIME,
                Opt.MIN_LEASE_TIME, Opt.MAX_START_TIME}
assert {f.name for f in fields(Message)} >= set(_FIELD_OF.values())
_option_values = operator.attrgetter(*_FIELD_OF.values())  # one C call per message


_HEADER = struct.Struct(">BBHI")  # version, type, address family, transaction id
_OPTION_HEAD = struct.Struct(">HH")  # code, length


def _addr_len(family: int) -> int:
    return 4 if family == FAMILY_IPV4 else 16


def _address(data: bytes, family: int) -> IPAddress:
    if family == FAMILY_IPV4:
        return _v4_address(data)
    return ipaddress.IPv6Address(data)


@functools.lru_cache(maxsize=4096)
def _v4_address(packed: bytes) -> ipaddress.IPv4Address:
    # Scope ids and server ids repeat in every message; ipaddress objects are immutable.
    return ipaddress.IPv4Address(packed)


def _need(code: int, value: bytes, length: int, exact: bool = True) -> None:
    if (len(value) != length) if exact else (len(value) < length):
        want = f"{length}" if exact else f"at least {length}"
        raise MadcapDecodeError(Reason.BAD_LENGTH, f"option {code} has {len(value)} octets, "
                                                   f"expected {want}", code)


def _u16_list(code: int, value: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise MadcapDecodeError(Reason.BAD_LENGTH, f"option {code}: odd length", code)
    return struct.unpack(f">{len(value) // 2}H", value)


def _decode_scope_list(value: bytes, family: int) -> tuple[ScopeEntry, ...]:
    code = Opt.SCOPE_LIST
    if not value:
        return ()
    count, pos, alen = value[0], 1, _addr_len(family)
    entries = []
    for _ in range(count):
        if pos + 2 * alen + 2 > len(value):
            raise MadcapDecodeError(Reason.BAD_LENGTH, "scope list entry overruns", code)
        first = _address(value[pos:pos + alen], family)
        last = _address(value[pos + alen:pos + 2 * alen], family)
        pos += 2 * alen
        ttl, name_count = value[pos], value[pos + 1]
        pos += 2
        names = []
        for _ in range(name_count):
            if pos + 2 > len(value):
                raise MadcapDecodeError(Reason.BAD_LENGTH, "scope name overruns", code)
            flags, lang_len = value[pos], value[pos + 1]
            pos += 2
            if lang_len == 0 or pos + lang_len + 1 > len(value):
                raise MadcapDecodeError(Reason.BAD_VALUE, "bad language tag length", code)
            lang = value[pos:pos + lang_len]
            pos += lang_len
            name_len = value[pos]
            pos += 1
            if name_len == 0 or pos + name_len > len(value):
                raise MadcapDecodeError(Reason.BAD_VALUE, "bad scope name length", code)
            name = value[pos:pos + name_len]
            pos += name_len
            try:
                names.append(ScopeName(lang.decode("ascii"), name.decode("utf-8"),
                                       bool(flags & 0x80)))
            except UnicodeDecodeError:
                raise MadcapDecodeError(Reason.BAD_VALUE, "scope name is not UTF-8",
                                        code) from None
        entries.append(ScopeEntry(first, last, ttl, tuple(names)))
    if pos != len(value):
        raise MadcapDecodeError(Reason.BAD_LENGTH, "trailing octets in scope list", code)
    return tuple(entries)


def _decode_error(value: bytes) -> ErrorInfo:
    _need(Opt.ERROR, value, 2, exact=False)
    code = struct.unpack_from(">H", value)[0]
    rest = value[2:]
    if code in (ErrorCode.COULD_NOT_COMPLETE, ErrorCode.INVALID_REQUEST):
        _need(Opt.ERROR, rest, 2)
        return ErrorInfo(code, option=struct.unpack(">H", rest)[0])
    if code == ErrorCode.EXCESSIVE_CLOCK_SKEW:
        _need(Opt.ERROR, rest, 4)
        return ErrorInfo(code, server_time=struct.unpack(">I", rest)[0])
    if code == ErrorCode.LEASE_ID_NOT_RECOGNIZED:
        _need(Opt.ERROR, rest, 0)
        return ErrorInfo(code)
    if code == ErrorCode.REQUIRED_FEATURE_NOT_SUPPORTED:
        return ErrorInfo(code, features=_u16_list(Opt.ERROR, rest))
    return ErrorInfo(code, extra=rest)


def _decode_features(value: bytes) -> Features:
    lists: list[tuple[int, ...]] = []
    pos = 0
    for _ in range(3):
        if pos + 2 > len(value):
            raise MadcapDecodeError(Reason.BAD_LENGTH, "feature list truncated", Opt.FEATURES)
        count = struct.unpack_from(">H", value, pos)[0]
        pos += 2
        if pos + 2 * count > len(value):
            raise MadcapDecodeError(Reason.BAD_LENGTH, "feature list overruns", Opt.FEATURES)
        lists.append(struct.unpack_from(f">{count}H", value, pos))
        pos += 2 * count
    if pos != len(value):
        raise MadcapDecodeError(Reason.BAD_LENGTH, "trailing octets in feature list",
                                Opt.FEATURES)
    return Features(*lists)


def decode(data: bytes) -> Message:
    """Decode one MADCAP datagram or raise :class:`MadcapDecodeError`."""
    if len(data) < 12:
        raise MadcapDecodeError(Reason.TOO_SHORT, f"{len(data)} octets; at least 12 needed")
    version, msgtype, family, xid = _HEADER.unpack_from(data)
    if version != 0:
        raise MadcapDecodeError(Reason.BAD_VERSION, f"version {version}, expected 0")
    if family not in (FAMILY_IPV4, FAMILY_IPV6):
        raise MadcapDecodeError(Reason.BAD_FAMILY, f"address family {family}")
    alen = _addr_len(family)
    values: dict[str, object] = {}
    unknown: list[tuple[int, bytes]] = []
    pos = 8
    ended = False
    size = len(data)
    field_of = _FIELD_OF
    while pos + 4 <= size:
        code, length = _OPTION_HEAD.unpack_from(data, pos)
        pos += 4
        if pos + length > size:
            raise MadcapDecodeError(Reason.OPTION_OVERRUN,
                                    f"option {code} length {length} overruns the message", code)
        value = data[pos:pos + length]
        pos += length
        if code == Opt.END:
            if length:
                raise MadcapDecodeError(Reason.BAD_LENGTH, "End option with a value", code)
            ended = True
            break
        name = field_of.get(code)  # IntEnum keys: a plain int finds them
        if name is None:
            if any(seen == code for seen, _ in unknown):
                raise MadcapDecodeError(Reason.DUPLICATE_OPTION,
                                        f"option {code} appears twice", code)
            unknown.append((code, value))  # unknown options are skipped (RFC 2730 s. 2.3)
            continue
        if name in values:
            raise MadcapDecodeError(Reason.DUPLICATE_OPTION, f"option {code} appears twice",
                                    code)
        # the options of every request, inline (a call each cost a tenth of a decode)
        if code == Opt.LEASE_ID and length:
            values[name] = value
        elif code == Opt.SCOPE and length == 4 and alen == 4:
            values[name] = _v4_address(value)
        else:
            values[name] = _decode_option(code, value, family, alen)
    if not ended:
        raise MadcapDecodeError(Reason.MISSING_END, "options do not end with End")
    if pos != len(data):
        raise MadcapDecodeError(Reason.BAD_LENGTH, f"{len(data) - pos} octets after End")
    return Message(msgtype=msgtype, xid=xid, family=family, unknown=tuple(unknown),
                   **values)  # type: ignore[arg-type]


def request_key(data: bytes) -> tuple[int, int, bytes] | None:
    """(xid, message type, lease id) of a datagram, read without decoding it (None when
    there is no lease id to be found): what a shared reply cache is looked up by before
    the datagrams of a batch are handled."""
    if len(data) < 12:
        return None
    _, msgtype, _, xid = _HEADER.unpack_from(data)
    pos, size = 8, len(data)
    while pos + 4 <= size:
        code, length = _OPTION_HEAD.unpack_from(data, pos)
        pos += 4
        if code == Opt.LEASE_ID:
            return (xid, msgtype, data[pos:pos + length]) if pos + length <= size else None
        if code == Opt.END:
            return None
        pos += length
    return None


def _decode_option(code: int, value: bytes, family: int, alen: int) -> object:
    if code in _U32_OPTIONS:
        if len(value) != 4:
            _need(code, value, 4)
        return int.from_bytes(value, "big")
    if code == Opt.SERVER_ID:
        _need(code, value, 2, exact=False)
        sid_family = struct.unpack_from(">H", value)[0]
        if sid_family not in (FAMILY_IPV4, FAMILY_IPV6):
            raise MadcapDecodeError(Reason.BAD_FAMILY,
                                    f"server identifier family {sid_family}", code)
        _need(code, value, 2 + _addr_len(sid_family))
        return _address(value[2:], sid_family)
    if code == Opt.LEASE_ID:
        _need(code, value, 1, exact=False)
        return value
    if code == Opt.SCOPE:
        _need(code, value, alen)
        return _address(value, family)
    if code == Opt.OPTION_REQUEST:
        _need(code, value, 2, exact=False)
        return _u16_list(code, value)
    if code == Opt.NUM_ADDRESSES:
        _need(code, value, 4)
        minimum, desired = struct.unpack(">HH", value)
        return (minimum, desired)
    if code == Opt.LANGUAGE:
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise MadcapDecodeError(Reason.BAD_VALUE, "language tag is not ASCII",
                                    code) from None
    if code == Opt.SCOPE_LIST:
        return _decode_scope_list(value, family)
    if code == Opt.ADDRESS_RANGES:
        step = alen + 2
        if len(value) % step:
            raise MadcapDecodeError(Reason.BAD_LENGTH,
                                    f"address ranges length {len(value)} is not a multiple "
                                    f"of {step}", code)
        return tuple(AddressRange(_address(value[i:i + alen], family),
                                  struct.unpack_from(">H", value, i + alen)[0])
                     for i in range(0, len(value), step))
    if code == Opt.FEATURES:
        return _decode_features(value)
    if code == Opt.ERROR:
        return _decode_error(value)
    return value  # NESTING: kept opaque


def _encode_server_id(value: IPAddress) -> bytes:  # carries its own family
    return struct.pack(">H", FAMILY_IPV4 if value.version == 4 else FAMILY_IPV6) + value.packed


def _encode_features(value: Features) -> bytes:
    return b"".join(struct.pack(f">H{len(items)}H", len(items), *items)
                    for items in (value.supported, value.requested, value.required))


def _encode_error(value: ErrorInfo) -> bytes:
    head = struct.pack(">H", value.code)
    if value.code in (ErrorCode.COULD_NOT_COMPLETE, ErrorCode.INVALID_REQUEST):
        return head + struct.pack(">H", 0xFFFF if value.option is None else value.option)
    if value.code == ErrorCode.EXCESSIVE_CLOCK_SKEW:
        return head + struct.pack(">I", value.server_time or 0)
    if value.code == ErrorCode.REQUIRED_FEATURE_NOT_SUPPORTED:
        return head + struct.pack(f">{len(value.features)}H", *value.features)
    return head + value.extra


def _encode_scope_list(value: tuple[ScopeEntry, ...]) -> bytes:
    scope_list = bytearray([len(value)])
    for entry in value:
        scope_list += entry.scope_id.packed + entry.last.packed
        scope_list += bytes([entry.ttl, len(entry.names)])
        for n in entry.names:
            lang, name = n.language.encode("ascii"), n.name.encode("utf-8")
            scope_list += bytes([0x80 if n.default else 0, len(lang)]) + lang
            scope_list += bytes([len(name)]) + name
    return bytes(scope_list)


def _identity(value: bytes) -> bytes:
    return value


# Option code -> encoder of its value (the 32-bit options are written inline by encode()).
_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    Opt.SERVER_ID: _encode_server_id,
    Opt.LEASE_ID: _identity,
    Opt.SCOPE: operator.attrgetter("packed"),
    Opt.OPTION_REQUEST: lambda value: struct.pack(f">{len(value)}H", *value),
    Opt.NUM_ADDRESSES: lambda value: struct.pack(">HH", *value),
    Opt.LANGUAGE: lambda value: value.encode("ascii"),
    Opt.SCOPE_LIST: _encode_scope_list,
    Opt.ADDRESS_RANGES: lambda value: b"".join(r.start.packed + struct.pack(">H", r.count)
                                               for r in value),
    Opt.FEATURES: _encode_features,
    Opt.ERROR: _encode_error,
    Opt.NESTING: _identity,
}
assert set(_ENCODERS) | _U32_OPTIONS == set(_FIELD_OF)


def encode(message: Message) -> bytes:
    """Encode a message: header, options in code order, unknown ones, End."""
    out = bytearray(_HEADER.pack(0, message.msgtype, message.family, message.xid))
    for code, value in zip(_FIELD_OF, _option_values(message), strict=True):
        if value is None:
            continue
        if code in _U32_OPTIONS:  # the commonest: inline, no dispatch
            out += struct.pack(">HHI", code, 4, value)
            continue
        body = _ENCODERS[code](value)
        out += _OPTION_HEAD.pack(code, len(body))
        out += body
    for unknown_code, body in message.unknown:
        out += _OPTION_HEAD.pack(unknown_code, len(body))
        out += body
    out += b"\0\0\0\0"
    return bytes(out)


# The usual OFFER or ACK, encoded without a Message (see encode_lease_reply): the header
# and lease time, then per (server id, scope) their two options, cached by the objects'
# identity (an address's own hash is a Python method: a tenth of this function), which
# is checked, since an id may be reused once its object is gone.
_HEAD_AND_LEASE_TIME = struct.Struct(">BBHIHHI")
_RANGE_TAIL = struct.Struct(">H4x")  # the block's count, then End
_ReplyParts = tuple[bytes, bytes, bytes, int, IPAddress, IPAddress]
_REPLY_PARTS: dict[tuple[int, int], _ReplyParts] = {}


def encode_lease_reply(msgtype: int, family: int, xid: int, lease_id: bytes,
                       lease_time: int, server_id: IPAddress, scope: IPAddress,
                       first: int, count: int) -> bytes:
    """``encode`` of a reply carrying exactly Lease Time, Server Identifier, Lease
    Identifier, Multicast Scope and one block of Address Ranges (``count`` addresses
    from ``first``, of the scope's family), byte for byte, at a fraction of the cost:
    no Message, no address objects, the repeated options cached."""
    parts = _REPLY_PARTS.get((id(server_id), id(scope)))
    if parts is None or parts[4] is not server_id or parts[5] is not scope:
        sid = _encode_server_id(server_id)
        alen = len(scope.packed)
        parts = (_OPTION_HEAD.pack(Opt.SERVER_ID, len(sid)) + sid,
                 _OPTION_HEAD.pack(Opt.SCOPE, alen) + scope.packed,
                 _OPTION_HEAD.pack(Opt.ADDRESS_RANGES, alen + 2), alen, server_id, scope)
        if len(_REPLY_PARTS) >= 1024:  # a few local addresses times a few scopes
            _REPLY_PARTS.clear()
        _REPLY_PARTS[(id(server_id), id(scope))] = parts
    server_option, scope_option, ranges_head, alen = parts[:4]
    return b"".join((_HEAD_AND_LEASE_TIME.pack(0, msgtype, family, xid, Opt.LEASE_TIME, 4,
                                               lease_time),
                     server_option, _OPTION_HEAD.pack(Opt.LEASE_ID, len(lease_id)), lease_id,
                     scope_option, ranges_head, first.to_bytes(alen, "big"),
                     _RANGE_TAIL.pack(count)))


def coalesce(values: Iterable[int], version: int) -> tuple[AddressRange, ...]:
    """Addresses as ranges of consecutive ones (option 10's block size is 16 bits)."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if isinstance(values, list) and len(values) == 1:  # the usual lease: one address
        return (AddressRange(make(values[0]), 1),)
    ranges: list[list[int]] = []
    for value in sorted(values):
        if ranges and value == ranges[-1][0] + ranges[-1][1] and ranges[-1][1] < 0xFFFF:
            ranges[-1][1] += 1
        else:
            ranges.append([value, 1])
    return tuple(AddressRange(make(start), count) for start, count in ranges)


def new_lease_id() -> bytes:
    """A type-0 (random) Lease Identifier, 17 octets as Windows uses."""
    return b"\x00" + os.urandom(16)
