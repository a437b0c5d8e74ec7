"""A small synchronous HTTP client over a Unix socket, for the CLIs (starts fast:
no event loop, no aiohttp import)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ClientError(RuntimeError):
    """The daemon could not be reached, or answered with an error."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class UnixClient:
    def __init__(self, path: str | Path, timeout: float | None = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def _open(self) -> _UnixConnection:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.connect()
        except FileNotFoundError:
            raise ClientError(f"{self.path}: no control socket there; is the daemon "
                              "running? (use --socket PATH)") from None
        except PermissionError:
            raise ClientError(f"{self.path}: permission denied; ask to be added to the "
                              "socket's group") from None
        except ConnectionRefusedError:
            raise ClientError(f"{self.path}: connection refused; the daemon is not "
                              "running (stale socket)") from None
        return conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        conn = self._open()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            response = Response(resp.status, resp.getheader("Content-Type", ""), data)
        except TimeoutError:
            raise ClientError(f"{self.path}: no answer within {self.timeout} s") from None
        except (OSError, http.client.HTTPException) as exc:
            # e.g. a socket-activated daemon that failed to start closes the connection
            raise ClientError(f"{self.path}: the daemon closed the connection ({exc}); "
                              "see its log") from None
        finally:
            conn.close()
        if response.status >= 400:
            message = f"HTTP {response.status}"
            parsed: Any = None
            try:
                parsed = response.json()
                message = parsed["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode("utf-8", "replace").strip() or message
            raise ClientError(message, response.status, parsed)
        return response

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

    def send_json(self, method: str, path: str, value: Any) -> Any:
        return self.request(method, path, json.dumps(value).encode(),
                            {"Content-Type": "application/json"}).json()

    def stream_lines(self, path: str) -> Iterator[bytes]:
        conn = self._open()
        conn.timeout = None
        if conn.sock is not None:
            conn.sock.settimeout(None)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ClientError(f"HTTP {resp.status}", resp.status)
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line
        finally:
            conn.close()


# C0 and C1 controls and DEL (ESC starts a terminal sequence; so does U+009B, CSI, on some
# terminals), and the bidirectional overrides and isolates that reorder what is shown.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))} | {
    c: f"\\u{c:04x}" for c in (*range(0x202a, 0x202f), *range(0x2066, 0x206a))}


def printable(text: str) -> str:
    """Text from the network made safe for a terminal: controls shown as escapes.
    For human output only; JSON output stays exact."""
    return text.translate(_UNPRINTABLE)


def format_table(rows: list[list[str]], headers: list[str]) -> str:
    cells = [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(headers, *cells, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in cells:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(out)
