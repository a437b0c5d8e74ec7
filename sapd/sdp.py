"""SDP (RFC 8866) strict validation with line-numbered errors, and the session model.

Strict where a receiver depends on it (``v o s t`` order, origin fields, connection
addresses, media lines, one-letter types), tolerant where real devices deviate
harmlessly (optional lines out of order, FFmpeg's ``o=- 0 0 IN IP4 127.0.0.1``):
those pass with warnings.

This is a hand-written single pass over the lines because it runs once per new or
changed announcement; sdp-transform (one regex per grammar rule per line, ~340 us
for a 12-line SDP here) backs the detailed JSON view in :meth:`SessionDescription.details`.

The model's dataclasses are treated as immutable but not declared frozen: a frozen
dataclass's __init__ costs ~4x, and every new announcement builds about ten of them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sapd.plumbing import groupranges
from sapd.scopes import packed_is_multicast

NTP_UNIX_OFFSET = 2_208_988_800
# The last NTP second a datetime can hold (9999-12-31T23:59:59Z).
LAST_NTP_TIME = NTP_UNIX_OFFSET + int(
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC))
    .total_seconds())
# RFC 8866 numbers are 1*DIGIT of any length, kept exact as Python ints; longer than
# Python's int-string limit they could not be printed back (JSON, logs, the o= line).
MAX_NUMBER_DIGITS = 4300
_SHOWN = 40  # characters of a hostile value quoted in an error

# Session-level lines in RFC 8866 order; a lower rank after a higher one is out of order.
_SESSION_RANK = {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7,
                 "b": 8, "t": 9, "r": 9, "z": 10, "k": 11, "a": 12}
_MEDIA_RANK = {"i": 0, "c": 1, "b": 2, "k": 3, "a": 4}
_SESSION_RANK_A = _SESSION_RANK["a"]  # the highest of each: an a= line is never out of
_MEDIA_RANK_A = _MEDIA_RANK["a"]  # order, and sets the rank
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")
# Attribute names already found to be tokens: a set lookup instead of a character scan
# (~1.7 us an a= line); bounded, since names are whatever senders write.
_TOKEN_NAMES: set[str] = set()
_TOKEN_NAMES_MAX = 1024
_TOKEN_NAME_LEN = 64


@dataclass(slots=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class SdpError(ValueError):
    """An SDP that a receiver cannot use. Carries every problem found, with lines."""

    def __init__(self, errors: list[Problem], warnings: list[Problem]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = tuple(errors)
        self.warnings = tuple(warnings)


@dataclass(slots=True)
class Origin:
    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str

    @property
    def identity(self) -> str:
        """The session's identity: every o= field except the version."""
        return f"{self.username} {self.session_id} {self.nettype} {self.addrtype} {self.address}"

    @property
    def line(self) -> str:
        return (f"o={self.username} {self.session_id} {self.version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(slots=True)
class Connection:
    nettype: str
    addrtype: str
    address: str
    ttl: int | None
    count: int
    multicast: bool


@dataclass(slots=True)
class TimeSpan:
    start: datetime | None  # None: unbounded (t=0)
    stop: datetime | None


@dataclass(slots=True)
class Codec:
    payload_type: int
    encoding: str
    clock_rate: int
    parameters: str | None


@dataclass(slots=True)
class Attribute:
    name: str
    value: str | None


@dataclass(slots=True)
class Media:
    kind: str
    port: int
    port_count: int
    protocol: str
    formats: tuple[str, ...]
    info: str | None
    connections: tuple[Connection, ...]
    bandwidths: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    codecs: tuple[Codec, ...]


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    name: str
    info: str | None
    uri: str | None
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    connections: tuple[Connection, ...]  # session level only
    bandwidths: tuple[str, ...]
    times: tuple[TimeSpan, ...]
    repeats: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    media: tuple[Media, ...]
    raw: str
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    @property
    def identity(self) -> str:
        return self.origin.identity

    @property
    def version(self) -> int:
        return self.origin.version

    def all_connections(self) -> tuple[Connection, ...]:
        """Every connection in effect: session level, plus each media's own."""
        found: list[Connection] | None = None  # a copy only where a media section adds
        for media in self.media:
            if media.connections:
                if found is None:
                    found = list(self.connections)
                found.extend(c for c in media.connections if c not in found)
        return self.connections if found is None else tuple(found)

    @property
    def groups(self) -> tuple[str, ...]:
        """The multicast groups this session uses, exact and never expanded: an address
        for a connection of one group, ``FIRST-LAST`` for a /count (groupranges)."""
        out: list[str] = []
        for conn in self.all_connections():
            if conn.multicast:
                text = groupranges.entry(conn.address, conn.count)
                if text not in out:
                    out.append(text)
        return tuple(out)

    @property
    def first_group(self) -> str | None:
        """The first multicast address of the first multicast connection (its scope)."""
        return next((c.address for c in self.all_connections() if c.multicast), None)

    @property
    def stop_time(self) -> datetime | None:
        """When the session ends for good: the latest t= stop, None if any is unbounded."""
        if self.repeats:
            return None
        latest: datetime | None = None
        for span in self.times:
            if span.stop is None:
                return None
            if latest is None or span.stop > latest:
                latest = span.stop
        return latest

    def details(self) -> dict[str, Any]:
        """The full sdp-transform parse tree, for people and scripts wanting every field."""
        # Imported here for start-up time: it is slow and only the API's detail view uses it.
        import sdp_transform  # noqa: PLC0415

        result: dict[str, Any] = sdp_transform.parse(self.raw)
        return result

    def to_json(self) -> dict[str, Any]:
        def conn(c: Connection) -> dict[str, Any]:
            return {"address": c.address, "ttl": c.ttl, "count": c.count,
                    "addrtype": c.addrtype, "multicast": c.multicast}

        def when(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "identity": self.identity,
            "version": str(self.version),  # decimal string: may exceed 2**64 (VLC)
            "origin": {"username": self.origin.username, "session_id": self.origin.session_id,
                       "version": str(self.origin.version), "nettype": self.origin.nettype,
                       "addrtype": self.origin.addrtype, "address": self.origin.address},
            "name": self.name,
            "info": self.info,
            "uri": self.uri,
            "emails": list(self.emails),
            "phones": list(self.phones),
            "connections": [conn(c) for c in self.connections],
            "bandwidths": list(self.bandwidths),
            "times": [{"start": when(t.start), "stop": when(t.stop)} for t in self.times],
            "repeats": list(self.repeats),
            "attributes": [{"name": a.name, "value": a.value} for a in self.attributes],
            "media": [{
                "type": m.kind, "port": m.port, "port_count": m.port_count,
                "protocol": m.protocol, "formats": list(m.formats), "info": m.info,
                "connections": [conn(c) for c in m.connections],
                "bandwidths": list(m.bandwidths),
                "attributes": [{"name": a.name, "value": a.value} for a in m.attributes],
                "codecs": [{"payload_type": c.payload_type, "encoding": c.encoding,
                            "clock_rate": c.clock_rate, "parameters": c.parameters}
                           for c in m.codecs],
            } for m in self.media],
            "groups": list(self.groups),
            "warnings": [str(w) for w in self.warnings],
        }


def _shown(text: str) -> str:
    """A value quoted in an error, cut short: a 16 kB field must not make a 16 kB error."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} chars)"


def is_number(text: str) -> bool:
    """RFC 8866 ``1*DIGIT``: ASCII digits only (str.isdigit() also takes '\u00b2')."""
    return text.isascii() and text.isdigit()


def _number(b: _Builder, n: int, what: str, text: str) -> int | None:
    """A ``1*DIGIT`` field as an exact int, or a line-numbered error naming the rule."""
    if len(text) <= MAX_NUMBER_DIGITS and text.isdigit() and text.isascii():
        return int(text)  # the usual case, checked in one go (int() takes leading zeros)
    if not is_number(text):
        b.error(n, f"{what} {_shown(text)} is not numeric (RFC 8866: ASCII digits only)")
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > MAX_NUMBER_DIGITS:
        b.error(n, f"{what} has {len(significant)} digits; sapd keeps numbers of up to "
                   f"{MAX_NUMBER_DIGITS} digits")
        return None
    return int(significant)


def ntp_to_datetime(value: int) -> datetime | None:
    """SDP times are NTP seconds; 0 means unbounded."""
    if value == 0:
        return None
    return datetime.fromtimestamp(0, UTC) + timedelta(seconds=value - NTP_UNIX_OFFSET)


def _is_typed_time(text: str, signed: bool = False) -> bool:
    if signed and text.startswith("-"):
        text = text[1:]
    if text and text[-1] in "dhms":
        text = text[:-1]
    return is_number(text)


class _Builder:
    """Mutable state of one validation pass; produces a SessionDescription."""

    __slots__ = ("attributes", "bandwidths", "connections", "emails", "errors", "info",
                 "m_attrs", "m_bw", "m_codecs", "m_conns", "m_head", "m_info", "m_line",
                 "media", "media_c_lines", "name", "origin", "phones", "repeats",
                 "session_c_lines", "times", "uri", "warnings")

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.origin: Origin | None = None
        self.name: str | None = None
        self.info: str | None = None
        self.uri: str | None = None
        self.emails: list[str] = []
        self.phones: list[str] = []
        self.connections: list[Connection] = []
        self.bandwidths: list[str] = []
        self.times: list[TimeSpan] = []
        self.repeats: list[str] = []
        self.attributes: list[Attribute] = []
        self.media: list[Media] = []
        self.session_c_lines = 0  # c= lines seen, valid or not (no cascading errors)
        self.media_c_lines = 0
        # current media section
        self.m_head: tuple[str, int, int, str, tuple[str, ...]] | None = None
        self.m_line = 0
        self.m_info: str | None = None
        self.m_conns: list[Connection] = []
        self.m_bw: list[str] = []
        self.m_attrs: list[Attribute] = []
        self.m_codecs: list[Codec] = []

    def error(self, line: int, message: str) -> None:
        self.errors.append(Problem(line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Problem(line, message))

    def close_media(self) -> None:
        if self.m_head is None:
            return
        kind, port, count, proto, formats = self.m_head
        if not self.media_c_lines and not self.session_c_lines:
            self.error(self.m_line, "m= section has no c= line and there is no session-level c=")
        self.media.append(Media(kind, port, count, proto, formats, self.m_info,
                                tuple(self.m_conns), tuple(self.m_bw), tuple(self.m_attrs),
                                tuple(self.m_codecs)))
        self.m_head = None
        self.m_info = None
        self.m_conns, self.m_bw, self.m_attrs, self.m_codecs = [], [], [], []
        self.media_c_lines = 0


def _parse_origin(b: _Builder, n: int, value: str) -> None:
    fields = value.split(" ")
    if len(fields) != 6 or "" in fields:
        b.error(n, "o= must have six space-separated fields: "
                   "<username> <sess-id> <sess-version> <nettype> <addrtype> <address>")
        return
    user, sess_id, version_text, nettype, addrtype, address = fields
    # The session id stays text (it is part of the identity) but must be a number too.
    if _number(b, n, "o= session id", sess_id) is None:
        return
    version = _number(b, n, "o= session version", version_text)
    if version is None:
        return
    if nettype != "IN":
        b.warn(n, f"o= network type {_shown(nettype)} is not IN")
    if addrtype not in ("IP4", "IP6"):
        b.warn(n, f"o= address type {_shown(addrtype)} is not IP4 or IP6")
    if address.startswith("127.") or address == "::1":
        b.warn(n, f"o= address {address} is a loopback address; sessions from "
                  "different hosts may share this identity")
    if sess_id == "0" and user == "-":
        b.warn(n, "o= session id 0 with username '-' is not globally unique")
    b.origin = Origin(user, sess_id, version, nettype, addrtype, address)


def _parse_connection(b: _Builder, n: int, value: str) -> Connection | None:
    fields = value.split(" ")
    if len(fields) != 3:
        b.error(n, "c= must be '<nettype> <addrtype> <connection-address>'")
        return None
    nettype, addrtype, spec = fields
    parts = spec.split("/")
    address = parts[0]
    if not address.isprintable():  # RFC 8866: VCHARs; a NUL also stops inet_pton
        b.error(n, f"c= address {_shown(address)} contains a control character")
        return None
    if nettype != "IN" or addrtype not in ("IP4", "IP6"):
        b.warn(n, f"c= {nettype} {addrtype} is not IN IP4/IP6; address not interpreted")
        return Connection(nettype, addrtype, address, None, 1, False)
    # inet_pton (C) rather than ipaddress: this runs for every new announcement.
    family = socket.AF_INET if addrtype == "IP4" else socket.AF_INET6
    try:
        packed = socket.inet_pton(family, address)
    except OSError:
        other = socket.AF_INET6 if family == socket.AF_INET else socket.AF_INET
        try:
            socket.inet_pton(other, address)
        except OSError:
            if len(parts) > 1:
                b.error(n, f"c= address {_shown(address)} is not an {addrtype} address")
                return None
            return Connection(nettype, addrtype, address, None, 1, False)  # FQDN
        b.error(n, f"c= address {address} does not match address type {addrtype}")
        return None
    v4 = family == socket.AF_INET
    multicast = packed_is_multicast(packed)
    canonical = address if v4 else socket.inet_ntop(family, packed)
    numbers: list[int] = []
    for text in parts[1:]:
        number = _number(b, n, "c= TTL or address count", text)
        if number is None:
            return None
        numbers.append(number)
    ttl: int | None = None
    count = 1
    if not multicast:
        if numbers:
            b.error(n, f"c= unicast address {address} must not carry a TTL or count")
            return None
    elif v4:
        if not numbers:
            b.error(n, f"c= IPv4 multicast address {address} needs a TTL ({address}/<ttl>)")
            return None
        if len(numbers) > 2:
            b.error(n, f"c= {_shown(spec)} has too many '/' fields")
            return None
        ttl = numbers[0]
        if ttl > 255:
            b.error(n, f"c= TTL {ttl} is above 255")
            return None
        if len(numbers) == 2:
            count = numbers[1]
    else:
        if len(numbers) > 1:
            b.error(n, f"c= IPv6 multicast {_shown(spec)} takes no TTL, only '/<count>'")
            return None
        if numbers:
            count = numbers[0]
    if count < 1:
        b.error(n, "c= address count must be at least 1")
        return None
    # The count's addresses are contiguous (RFC 8866 5.7) and must all be multicast.
    last = int.from_bytes(packed, "big") + count - 1
    if last > (0xEFFFFFFF if v4 else (1 << 128) - 1):
        b.error(n, f"c= address count {count} runs past the end of the multicast range")
        return None
    return Connection(nettype, addrtype, canonical, ttl, count, multicast)


def _parse_media(b: _Builder, n: int, value: str) -> None:
    fields = value.split(" ")
    if len(fields) < 4 or "" in fields:
        b.error(n, "m= must be '<media> <port>[/<count>] <proto> <fmt> ...'")
        b.m_head = ("", 0, 1, "", ())
        b.m_line = n
        return
    kind, port_spec, proto = fields[0], fields[1], fields[2]
    port_text, _, count_text = port_spec.partition("/")
    if (not is_number(port_text) or len(port_text) > 5 or int(port_text) > 65535
            or (count_text and (not is_number(count_text) or len(count_text) > 5))):
        b.error(n, f"m= port {_shown(port_spec)} is not '<port>[/<count>]' with port 0-65535")
        port, count = 0, 1
    else:
        port, count = int(port_text), int(count_text or 1)
    b.m_head = (kind, port, count, proto, tuple(fields[3:]))
    b.m_line = n


def _is_token(name: str) -> bool:
    if name in _TOKEN_NAMES:
        return True
    if not name or not _TOKEN_CHARS.issuperset(name):
        return False
    if len(name) <= _TOKEN_NAME_LEN and len(_TOKEN_NAMES) < _TOKEN_NAMES_MAX:
        _TOKEN_NAMES.add(name)
    return True


def _add_attribute(b: _Builder, n: int, value: str) -> None:
    """An a= line, to the current media section's attributes or the session's."""
    name, sep, attr_value = value.partition(":")
    if name not in _TOKEN_NAMES and not _is_token(name):
        b.error(n, f"a= attribute name {_shown(name)} is not a token")
        return
    in_media = b.m_head is not None
    if name == "rtpmap" and in_media and not _add_codec(b, n, attr_value):
        return
    (b.m_attrs if in_media else b.attributes).append(
        Attribute(name, attr_value if sep else None))


def _add_codec(b: _Builder, n: int, value: str) -> bool:
    """A media section's a=rtpmap value, to its codecs; False (and an error) if malformed."""
    pt_text, _, rest = value.partition(" ")
    enc = rest.split("/")
    if (not is_number(pt_text) or len(pt_text) > 3 or len(enc) < 2 or not enc[0]
            or not is_number(enc[1]) or len(enc[1]) > 10 or int(pt_text) > 127):
        b.error(n, "a=rtpmap must be '<payload type> <encoding>/<clock rate>[/<params>]'")
        return False
    b.m_codecs.append(Codec(int(pt_text), enc[0], int(enc[1]), "/".join(enc[2:]) or None))
    return True


def _parse_time(b: _Builder, n: int, value: str) -> None:
    if value == "0 0":  # unbounded: what nearly every announcement says
        b.times.append(TimeSpan(None, None))
        return
    fields = value.split(" ")
    if len(fields) != 2 or not is_number(fields[0]) or not is_number(fields[1]):
        b.error(n, "t= must be '<start-time> <stop-time>' in NTP seconds")
        return
    start = _number(b, n, "t= start time", fields[0])
    stop = _number(b, n, "t= stop time", fields[1]) if start is not None else None
    if start is None or stop is None:
        return
    for what, value_ in (("start", start), ("stop", stop)):
        if value_ > LAST_NTP_TIME:
            b.error(n, f"t= {what} time {_shown(str(value_))} is after year 9999")
            return
    if stop and start and stop < start:
        b.error(n, "t= stop time is before the start time")
        return
    b.times.append(TimeSpan(ntp_to_datetime(start), ntp_to_datetime(stop)))


def _bandwidth_ok(b: _Builder, n: int, value: str) -> bool:
    bw_type, sep, bw = value.partition(":")
    if not sep or not bw_type or not is_number(bw):
        b.error(n, "b= must be '<bwtype>:<bandwidth>' with a number of kbit/s")
        return False
    return True


def _check_session_line(b: _Builder, n: int, kind: str, value: str) -> None:
    if kind == "a":  # the most common line first
        _add_attribute(b, n, value)
    elif kind == "i":
        b.info = value
    elif kind == "u":
        b.uri = value
    elif kind == "e":
        b.emails.append(value)
    elif kind == "p":
        b.phones.append(value)
    elif kind == "c":
        b.session_c_lines += 1
        conn = _parse_connection(b, n, value)
        if conn:
            b.connections.append(conn)
    elif kind == "b":
        if _bandwidth_ok(b, n, value):
            b.bandwidths.append(value)
    elif kind == "t":
        _parse_time(b, n, value)
    elif kind == "r":
        fields = value.split(" ")
        if not b.times:
            b.error(n, "r= must follow a t= line")
        elif len(fields) < 3 or not all(_is_typed_time(f) for f in fields):
            b.error(n, "r= must be '<repeat interval> <active duration> <offsets...>'")
        else:
            b.repeats.append(value)
    elif kind == "z":
        fields = value.split(" ")
        if len(fields) < 2 or len(fields) % 2 or not all(
                is_number(f) if i % 2 == 0 else _is_typed_time(f, signed=True)
                for i, f in enumerate(fields)):
            b.error(n, "z= must be pairs of '<adjustment time> <offset>'")
    elif kind == "k":
        b.warn(n, "k= is obsolete (RFC 8866) and ignored")


def _check_media_line(b: _Builder, n: int, kind: str, value: str) -> None:
    if kind == "a":  # the most common line first
        _add_attribute(b, n, value)
    elif kind == "i":
        b.m_info = value
    elif kind == "c":
        b.media_c_lines += 1
        conn = _parse_connection(b, n, value)
        if conn:
            b.m_conns.append(conn)
    elif kind == "b":
        if _bandwidth_ok(b, n, value):
            b.m_bw.append(value)
    elif kind == "k":
        b.warn(n, "k= is obsolete (RFC 8866) and ignored")


def _decode_text(data: str | bytes, b: _Builder) -> str | None:
    if isinstance(data, str):
        try:  # text from JSON may hold unpaired surrogates, which nothing can store
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            b.error(data[:exc.start].count("\n") + 1,
                    "text contains an unpaired surrogate; it is not Unicode text")
            return None
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        b.warn(line, "text is not UTF-8; read as ISO-8859-1")
        return data.decode("latin-1")


def validate(data: str | bytes) -> tuple[SessionDescription | None, list[Problem], list[Problem]]:
    """Validate an SDP. Returns (session or None, errors, warnings)."""
    b = _Builder()
    text = _decode_text(data, b)
    if text is None:
        return None, b.errors, b.warnings
    # "\r\n" -> "\n" once, not a strip per line: the same lines (one CR before each LF
    # goes), and the last line, which has no LF after it, loses a CR of its own below.
    lines = (text.replace("\r\n", "\n") if "\r" in text else text).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        b.error(0, "empty session description")
        return None, b.errors, b.warnings
    if not text.endswith("\n") and lines[-1].endswith("\r"):
        lines[-1] = lines[-1][:-1]
    mandatory = "vos"
    header = 3  # len(mandatory)
    rank = -1
    m_rank = -1
    start = 0
    if len(lines) >= 3 and lines[0] == "v=0" and lines[1][:2] == "o=" and lines[2][:2] == "s=":
        # the usual start, read without the checks the general loop makes of it
        _parse_origin(b, 2, lines[1][2:])
        name = lines[2][2:]
        if not name.strip():
            b.warn(3, "s= is empty; RFC 8866 asks for 's= ' or 's=-'")
        b.name = name
        rank = _SESSION_RANK["s"]
        start = 3
    in_media = False  # b.m_head is not None
    for index in range(start, len(lines)):
        line = lines[index]
        n = index + 1
        if len(line) < 2 or line[1] != "=":
            if not line.strip():
                b.warn(n, "blank line ignored")
                continue
            b.error(n, "expected '<type>=<value>' with a one-letter type")
            continue
        kind = line[0]
        if kind == "a" and index >= header:  # the most common line: _add_attribute inlined
            # a= ranks last in both orders: never out of order, and it sets the rank
            if in_media:
                m_rank = _MEDIA_RANK_A
            else:
                rank = _SESSION_RANK_A
            name, sep, attr_value = line[2:].partition(":")
            if name not in _TOKEN_NAMES and not _is_token(name):
                b.error(n, f"a= attribute name {_shown(name)} is not a token")
            elif not in_media:
                b.attributes.append(Attribute(name, attr_value if sep else None))
            elif name != "rtpmap" or _add_codec(b, n, attr_value):
                b.m_attrs.append(Attribute(name, attr_value if sep else None))
            continue
        value = line[2:]
        if kind not in _KNOWN_TYPES:
            b.error(n, f"unknown type letter {kind!r} (RFC 8866 requires rejecting it)")
            continue
        if index < header and kind != mandatory[index]:
            b.error(n, f"expected {mandatory[index]}= as line {n}, found {kind}= (the "
                       "session must start v= o= s=)")
            if index == 0:
                return None, b.errors, b.warnings
            if kind in "vos":
                continue
            # The rest of the header is missing: read this line for what it is, so a
            # missing s= does not also report the t= after it as missing.
            mandatory = mandatory[:index]
            header = index
        if index < header:
            if kind == "v":
                if value != "0":
                    b.error(n, f"v= must be 0, got {_shown(value)}")
            elif kind == "o":
                _parse_origin(b, n, value)
            else:
                if not value.strip():
                    b.warn(n, "s= is empty; RFC 8866 asks for 's= ' or 's=-'")
                b.name = value
            rank = _SESSION_RANK[kind]
            continue
        if kind in "vos":
            b.error(n, f"{kind}= may appear only once, as line {'vos'.index(kind) + 1}")
            continue
        if kind == "m":
            if not in_media and not b.times:
                b.error(n, "t= is required before the first m=")
            b.close_media()
            _parse_media(b, n, value)
            in_media = True
            m_rank = -1
            continue
        if in_media:
            if kind not in _MEDIA_RANK:
                b.error(n, f"{kind}= is not allowed in a media section")
                continue
            r = _MEDIA_RANK[kind]
            if r < m_rank:
                b.warn(n, f"{kind}= is out of RFC 8866 order in this media section")
            m_rank = max(m_rank, r)
            _check_media_line(b, n, kind, value)
            continue
        r = _SESSION_RANK[kind]
        if r < rank and kind != "t":
            b.warn(n, f"{kind}= is out of RFC 8866 order at session level")
        elif kind == "t" and rank > _SESSION_RANK["t"]:
            b.error(n, "t= must come before z=, k= and a= lines")
        rank = max(rank, r)
        _check_session_line(b, n, kind, value)
    if b.m_head is None and not b.times and len(lines) >= 3:
        b.error(len(lines), "t= is required (no t= line found)")
    b.close_media()
    if len(lines) < 3:
        b.error(len(lines), f"truncated: the session must start v= o= s= "
                            f"(only {len(lines)} line(s))")
    if b.errors or b.origin is None or b.name is None:
        if not b.errors:
            b.error(2, "no valid o= line")
        b.errors.sort(key=lambda p: p.line)
        return None, b.errors, b.warnings
    session = SessionDescription(
        origin=b.origin, name=b.name, info=b.info, uri=b.uri, emails=tuple(b.emails),
        phones=tuple(b.phones), connections=tuple(b.connections),
        bandwidths=tuple(b.bandwidths), times=tuple(b.times), repeats=tuple(b.repeats),
        attributes=tuple(b.attributes), media=tuple(b.media), raw=text,
        warnings=tuple(b.warnings))
    return session, b.errors, b.warnings


def parse(data: str | bytes) -> SessionDescription:
    """Validate and return the session, or raise :class:`SdpError` listing every problem."""
    session, errors, warnings = validate(data)
    if session is None:
        raise SdpError(errors, warnings)
    return session


def parse_origin_line(line: str | bytes) -> Origin | None:
    """Parse a lone ``o=`` line (the payload of a SAP deletion)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line.startswith("o="):
        return None
    b = _Builder()
    _parse_origin(b, 1, line[2:])
    return b.origin
