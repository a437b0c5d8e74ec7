"""RTSP/1.0 (RFC 2326) client codec, sans-IO: requests built as bytes, responses and
server-sent requests (ANNOUNCE) parsed incrementally from bytes.

What a RAVENNA ingest needs and no more: OPTIONS and DESCRIBE out, responses and
ANNOUNCE in, the reply to an ANNOUNCE out. Every input is bounded: the header block
(bytes and lines) and the body (Content-Length, before any of it is read); anything
past a bound, or not RTSP at all, is an :class:`RtspError` naming the reason, after
which the connection is unusable (the caller closes it). Interleaved RTP frames ('$')
are refused too: we never SETUP, so a server has no business sending them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

USER_AGENT = "sapd"
MAX_HEADER_BYTES = 8192  # the request/status line and every header, with CRLFs
MAX_HEADER_LINES = 64
MAX_BODY_BYTES = 16 * 1024  # the SDP cap ([limits] max_sdp_bytes), by default

# Refusal reasons (counter labels)
HEADER_TOO_LARGE = "rtsp_header_too_large"
TOO_MANY_HEADERS = "rtsp_too_many_headers"
BODY_TOO_LARGE = "rtsp_body_too_large"
MALFORMED = "rtsp_malformed"

_STATUS = re.compile(r"RTSP/1\.0 ([0-9]{3})(?: (.*))?\Z")
_REQUEST = re.compile(r"([A-Z_]{1,32}) (\S{1,4096}) RTSP/1\.0\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}\Z")
# ASCII digits only: str.isdigit() takes '\u00b2', which int() then refuses (ValueError)
_NUMBER = re.compile(r"[0-9]{1,12}\Z")


class RtspError(ValueError):
    """The peer sent something this codec does not take; ``reason`` names it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Headed:
    """What both kinds of message read from their headers."""

    __slots__ = ()
    headers: dict[str, str]

    @property
    def cseq(self) -> int | None:
        return _cseq(self.headers)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Response(_Headed):
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps the last
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Request(_Headed):
    """A request the server sent us (ANNOUNCE carries a new SDP)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""


Message = Response | Request


def _cseq(headers: dict[str, str]) -> int | None:
    value = headers.get("cseq", "").strip()
    return int(value) if _NUMBER.match(value) and len(value) <= 10 else None


# What stays as written in the second try: RFC 3986 sub-delims and ':' '@' '/' (what a
# server may have mounted literally); a space, a control or a non-ASCII character cannot
# be on a request line at all and is always encoded.
_AS_WRITTEN = "!$&'()*+,;=:@/"


def session_path(instance: str, encoded: bool = True) -> str:
    """RAVENNA's ``/by-name/<session name>``: every reserved character percent-encoded,
    or (``encoded=False``, the second try) only what a request line cannot carry.
    Servers differ: GStreamer's matches the mount path exactly as requested."""
    name = quote(instance, safe="" if encoded else _AS_WRITTEN)
    return f"/by-name/{name}"


def url_for(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"rtsp://{shown}:{port}{path}"


def build_request(method: str, url: str, cseq: int,
                  headers: dict[str, str] | None = None) -> bytes:
    """One request, no body. Our own values: a bad one is our bug, not the peer's."""
    if not _TOKEN.match(method) or any(c in url for c in "\r\n ") or not url:
        raise ValueError(f"not an RTSP request line: {method!r} {url!r}")
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", f"User-Agent: {USER_AGENT}"]
    for name, value in (headers or {}).items():
        if not _TOKEN.match(name) or any(c in value for c in "\r\n"):
            raise ValueError(f"not an RTSP header: {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_describe(url: str, cseq: int) -> bytes:
    return build_request("DESCRIBE", url, cseq, {"Accept": "application/sdp"})


def build_reply(cseq: int | None, status: int = 200, reason: str = "OK") -> bytes:
    """Our answer to a server's request (ANNOUNCE: 200; anything else: 501)."""
    lines = [f"RTSP/1.0 {status} {reason}"]
    if cseq is not None:
        lines.append(f"CSeq: {cseq}")
    lines.append(f"Server: {USER_AGENT}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(slots=True)
class RtspParser:
    """Feed bytes as they arrive; take whole messages out. Bounded: the buffer never
    holds more than one header block and one declared body."""

    max_header_bytes: int = MAX_HEADER_BYTES
    max_header_lines: int = MAX_HEADER_LINES
    max_body_bytes: int = MAX_BODY_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    _head: tuple[str, dict[str, str]] | None = None  # parsed start line + headers
    _length: int = 0
    failed: RtspError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self.failed is not None:
            raise self.failed
        self._buffer += data
        out: list[Message] = []
        try:
            while (message := self._next()) is not None:
                out.append(message)
        except RtspError as exc:
            self.failed = exc
            self._buffer.clear()
            raise
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _next(self) -> Message | None:
        buffer = self._buffer
        if self._head is None:
            while buffer[:2] == b"\r\n":  # RFC 2326 allows blank lines between messages
                del buffer[:2]
            if buffer[:1] == b"$":
                raise RtspError(MALFORMED, "interleaved RTP data on a connection that set "
                                           "nothing up")
            end = buffer.find(b"\r\n\r\n", 0, self.max_header_bytes + 4)
            if end < 0:
                if len(buffer) > self.max_header_bytes:
                    raise RtspError(HEADER_TOO_LARGE, f"header block over "
                                                      f"{self.max_header_bytes} bytes")
                if buffer.count(b"\n") > self.max_header_lines:
                    raise RtspError(TOO_MANY_HEADERS, f"over {self.max_header_lines} "
                                                      "header lines")
                return None
            block = bytes(buffer[:end])
            del buffer[:end + 4]
            self._head = self._parse_head(block)
            self._length = self._content_length(self._head[1])
        if len(buffer) < self._length:
            return None
        body = bytes(buffer[:self._length])
        del buffer[:self._length]
        start, headers = self._head
        self._head = None
        status = _STATUS.match(start)
        if status is not None:
            return Response(int(status.group(1)), status.group(2) or "", headers, body)
        request = _REQUEST.match(start)
        assert request is not None  # checked in _parse_head
        return Request(request.group(1), request.group(2), headers, body)

    def _parse_head(self, block: bytes) -> tuple[str, dict[str, str]]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RtspError(MALFORMED, f"header not UTF-8 at byte {exc.start}") from None
        lines = text.split("\r\n")
        if len(lines) - 1 > self.max_header_lines:
            raise RtspError(TOO_MANY_HEADERS, f"{len(lines) - 1} header lines, over "
                                              f"{self.max_header_lines}")
        start = lines[0]
        if not (_STATUS.match(start) or _REQUEST.match(start)):
            raise RtspError(MALFORMED, f"not an RTSP/1.0 status or request line: "
                                       f"{start[:60]!r}")
        headers: dict[str, str] = {}
        for n, line in enumerate(lines[1:], 2):
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.match(name.strip()):
                raise RtspError(MALFORMED, f"header line {n} is not 'Name: value': "
                                           f"{line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        return start, headers

    def _content_length(self, headers: dict[str, str]) -> int:
        value = headers.get("content-length", "0").strip()
        if not _NUMBER.match(value):
            raise RtspError(MALFORMED, f"Content-Length is not a number: {value[:20]!r}")
        length = int(value)
        if length > self.max_body_bytes:
            raise RtspError(BODY_TOO_LARGE, f"Content-Length {length} over "
                                            f"{self.max_body_bytes} bytes")
        return length
