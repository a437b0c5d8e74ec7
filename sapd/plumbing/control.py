"""The control socket: aiohttp over a Unix socket, with peer credentials and a uniform
JSON error envelope. Shared by sapd and madcapd.

- Created mode 0660 with an optional group; a stale file from a crashed run is
  replaced, but a socket some live daemon still answers on is left alone.
- Taken from systemd (LISTEN_FDS) when socket-activated.
- Every request's SO_PEERCRED (pid, uid, gid) is available via :func:`peer`.
- Connections are capped per peer uid (root exempt), so one user holding connections
  cannot take every file descriptor and lock the others out; a refused client gets a
  JSON 503 saying why, and refusals are logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import resource
import socket
import stat
import struct
import time
import typing
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from sapd.plumbing import logs, systemd
from sapd.plumbing.config import DEFAULT_CONNECTIONS_PER_UID
from sapd.plumbing.errors import StoreUnavailable

log = logs.get("sapd.control")
REFUSAL_LOG_EVERY = 10.0  # seconds: one log line per uid per period, not one per refusal
# A refused connection stays open until its request arrives (closing first would make
# the client's send fail with EPIPE, and it would never read why), at most this long
# and at most this many at once; beyond that it is closed at once.
REFUSAL_LINGER = 0.5
MAX_LINGERING = 64


class SocketInUse(RuntimeError):
    """Another live process answers on the control socket path."""


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


def peer(request: web.Request) -> Peer:
    """Credentials of the process on the other end of the request's connection."""
    cached = request.get("peer")
    if isinstance(cached, Peer):
        return cached
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        result = Peer(-1, -1, -1, ())
    else:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        result = Peer(pid, uid, gid, _peer_groups(sock, pid, gid))
    request["peer"] = result
    return result


SO_PEERGROUPS = 59  # Linux 4.13+; not exported by Python's socket module


def _peer_groups(sock: socket.socket, pid: int, gid: int) -> tuple[int, ...]:
    """The peer's groups from the kernel (works under ProtectProc=invisible), falling
    back to /proc on old kernels."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        return (gid, *struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:
        pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return (gid, *(int(g) for g in line.split()[1:]))
    except OSError:
        pass
    return (gid,)


D = TypeVar("D")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    description: str


def control_app(key: web.AppKey[D], daemon: D, endpoints: list[Endpoint],
                **options: Any) -> web.Application:
    """A daemon's control API: JSON errors, the daemon under ``key``, the endpoints, and an
    index of them at / and /v1 (one table, so the index cannot drift from what is
    served). ``options`` go to aiohttp's Application (e.g. client_max_size)."""
    app = web.Application(middlewares=[error_middleware], **options)
    app[key] = daemon
    listing = [{"method": e.method, "path": e.path, "description": e.description}
               for e in endpoints]

    async def index(request: web.Request) -> web.Response:
        return json_response({"endpoints": listing})
    app.router.add_get("/", index)
    app.router.add_get("/v1", index)
    for endpoint in endpoints:
        if endpoint.method == "GET":  # add_get also answers HEAD
            app.router.add_get(endpoint.path, endpoint.handler)
        else:
            app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    return app


def json_bytes(value: Any) -> bytes:
    """JSON for API bodies and event streams. orjson: a page of 100 sessions encodes in
    0.05 ms where the json module takes 0.5 ms, a quarter of the request. orjson refuses
    integers beyond 64 bits (SDP numbers are 1*DIGIT, any length): those go as decimal
    strings, as the session's own o= numbers always do."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_wide_ints_as_text(value), default=str,
                            option=orjson.OPT_NON_STR_KEYS)


def _wide_ints_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -2**63 <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {key: _wide_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints_as_text(item) for item in value]
    return value


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json_bytes(body), status=status, headers=headers,
                        content_type="application/json")


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """Errors are JSON a person can act on: {"error": {"status", "message", ...}}."""
    return json_response({"error": {"status": status, "message": message, **extra}}, status)


def http_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An exception to raise from deep in a handler; renders like :func:`json_error`."""
    body = json_bytes({"error": {"status": status, "message": message, **extra}})
    cls = _ERROR_CLASSES.get(status, web.HTTPBadRequest)
    return cls(body=body, content_type="application/json")


def refuse_nul(query: Mapping[str, str]) -> None:
    """A 400 naming the first query parameter that holds a NUL: no stored text holds
    one, and PostgreSQL refuses one even as a parameter (a DataError, not "none")."""
    nul = next((name for name, value in query.items() if "\x00" in value), None)
    if nul is not None:
        raise http_error(400, f"query parameter {nul}=: holds a NUL character")


def query_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter that must be an integer in low..high (a 400 naming it if not)."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise http_error(400, f"query parameter {name}={value!r}: "
                              f"expected an integer in {low}..{high}")
    return number


_ERROR_CLASSES: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
    409: web.HTTPConflict, 413: web.HTTPRequestEntityTooLarge,
    415: web.HTTPUnsupportedMediaType, 503: web.HTTPServiceUnavailable,
}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason if exc.text is None else exc.text)
        raise
    except StoreUnavailable as exc:  # the database is down: try again, nothing is lost
        return json_error(503, str(exc), retry=True)


def _remove_stale(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left behind by a crashed run
        return
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SocketInUse(f"{path} is in use by a running daemon")


def bind_unix(path: Path, group: str | None = None, mode: int = 0o660) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 ^ mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            sock.close()
            raise ValueError(f"control socket group {group!r} does not exist") from None
        os.chown(path, -1, gid)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _peer_uid(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return -1
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


def descriptor_budget() -> int:
    """Connections all non-root peers together may hold: half the open-file limit, the
    rest left for the daemon's own sockets, files and root's connections."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) // 2)


@dataclass
class ConnectionGate:
    """How many control connections each peer uid holds, and who is turned away.

    Root is exempt (it can exhaust descriptors by other means and the operator must
    always get in); every other uid, admin groups included, may hold ``per_uid``, and
    all of them together ``total`` (default :func:`descriptor_budget`)."""

    per_uid: int = DEFAULT_CONNECTIONS_PER_UID
    total: int = field(default_factory=descriptor_budget)
    held: Counter[int] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    lingering: int = 0  # refused connections waiting for their request, to answer it
    _logged: dict[int, tuple[float, int]] = field(default_factory=dict)  # uid: (when, n)

    def admit(self, uid: int, now: float) -> str | None:
        """None to admit (and count) a connection from ``uid``, else the refusal."""
        if uid != 0:
            if self.held[uid] >= self.per_uid:
                return self._refuse(uid, "per_uid", now,
                                    f"uid {uid} holds {self.held[uid]} control connections, "
                                    f"the most one uid may (socket_connections_per_uid = "
                                    f"{self.per_uid}); close idle ones")
            others = sum(n for u, n in self.held.items() if u != 0)
            if others >= self.total:
                return self._refuse(uid, "total", now,
                                    f"{others} control connections are open, the most this "
                                    f"daemon's open-file limit allows; try again later")
        self.held[uid] += 1
        return None

    def release(self, uid: int) -> None:
        self.held[uid] -= 1
        if self.held[uid] <= 0:
            del self.held[uid]

    def _refuse(self, uid: int, reason: str, now: float, message: str) -> str:
        self.refused[reason] += 1
        when, since = self._logged.get(uid, (-REFUSAL_LOG_EVERY, 0))
        if now - when >= REFUSAL_LOG_EVERY:
            log.warning("control connection refused", uid=uid, reason=reason,
                        held=self.held[uid], refused_since_last_line=since + 1)
            self._logged[uid] = (now, 0)
        else:
            self._logged[uid] = (when, since + 1)
        return message

    def stats(self) -> dict[str, Any]:
        return {"connections": sum(self.held.values()), "peers": len(self.held),
                "max_per_uid": self.per_uid, "max_total": self.total,
                "refused": dict(sorted(self.refused.items()))}

    def metrics_lines(self, prefix: str) -> list[str]:
        lines = [f"# HELP {prefix}_control_connections Open control socket connections.",
                 f"# TYPE {prefix}_control_connections gauge",
                 f"{prefix}_control_connections {sum(self.held.values())}",
                 f"# HELP {prefix}_control_refused_total Control connections refused, "
                 "by reason.",
                 f"# TYPE {prefix}_control_refused_total counter"]
        for reason in ("per_uid", "total"):
            lines.append(f'{prefix}_control_refused_total{{reason="{reason}"}} '
                         f"{self.refused[reason]}")
        return lines


def _refusal(message: str) -> bytes:
    body = json_bytes({"error": {"status": 503, "message": message}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class _Gated(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the gate: a refused connection is
    answered and closed before aiohttp sees it."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self.inner: asyncio.Protocol | None = inner
        self.gate = gate
        self.uid = -1
        self._refused: asyncio.WriteTransport | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            self.uid = _peer_uid(transport)
        except OSError:
            self.uid = -1
        refusal = self.gate.admit(self.uid, time.monotonic())
        if refusal is not None:
            self.inner = None
            writer = typing.cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass
            writer.write(_refusal(refusal))
            if self.gate.lingering >= MAX_LINGERING:
                writer.close()
                return
            self.gate.lingering += 1
            self._refused = writer
            self._linger = asyncio.get_running_loop().call_later(REFUSAL_LINGER,
                                                                 writer.close)
            return
        assert self.inner is not None
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
        elif self._refused is not None:  # its request arrived: the answer is on its way
            self._refused.close()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused is not None:
            self._refused = None
            self.gate.lingering -= 1
            if self._linger is not None:
                self._linger.cancel()
        if self.inner is not None:
            self.gate.release(self.uid)
            self.inner.connection_lost(exc)
            self.inner = None


class _GatedSite(web.SockSite):
    """aiohttp's SockSite with every connection passed through the gate first."""

    __slots__ = ("_gate",)

    def __init__(self, runner: web.BaseRunner, sock: socket.socket,
                 gate: ConnectionGate) -> None:
        super().__init__(runner, sock)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        handler = self._runner.server
        assert handler is not None
        gate = self._gate
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gated(handler(), gate), sock=self._sock, backlog=self._backlog)


class ControlServer:
    """Runs an aiohttp app on the control socket (inherited from systemd, or created)."""

    def __init__(self, app: web.Application, path: Path, group: str | None = None,
                 connections_per_uid: int = DEFAULT_CONNECTIONS_PER_UID) -> None:
        self.app = app
        self.path = path
        self.group = group
        self.inherited = False
        self.gate = ConnectionGate(per_uid=connections_per_uid)
        self._runner: web.AppRunner | None = None
        self._created: Path | None = None

    async def start(self) -> None:
        inherited = [s for s in systemd.listen_fds() if s.family == socket.AF_UNIX]
        if inherited:
            sock = inherited[0]
            sock.setblocking(False)
            self.inherited = True
        else:
            sock = bind_unix(self.path, self.group)
            self._created = self.path
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        await _GatedSite(self._runner, sock, self.gate).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._created is not None:
            with contextlib.suppress(OSError):
                self._created.unlink()
            self._created = None
