"""RAVENNA ingest, the asyncio edge: python-zeroconf browses and resolves, one RTSP
connection per followed session asks DESCRIBE and hears ANNOUNCE. Every decision
(what to describe when, what to drop, the bounds) is ravenna_core's; what a described
SDP means for the directory is the engine's (Engine.put_ravenna / remove_ravenna),
through the hub like every other change: durable, then heard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sapd.bridges import ravenna_core as core
from sapd.bridges import rtsp
from sapd.lifecycle import DROP_RATE_LIMITED
from sapd.plumbing import logs
from sapd.records import SAP, SessionRecord, via_of

if TYPE_CHECKING:
    from sapd.announce.service import Announcer
    from sapd.config import RavennaConfig
    from sapd.hub import Hub
    from sapd.lifecycle import Engine, Event

log = logs.get("sapd.ravenna")

SERVICE_TYPE = "_rtsp._tcp.local."
BROWSED_TYPE = "_ravenna_session._sub._rtsp._tcp.local."
RESOLVE_TIMEOUT_MS = 3000
READ_SIZE = 4096
# Our answers (to ANNOUNCE, 501 to anything else) a server has not read yet: past this
# it is closed, or a server that sends requests and never reads would grow our memory
MAX_UNSENT = 64 * 1024


class DescribeFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def instance_of(name: str) -> str:
    """``Studio A 1._rtsp._tcp.local.`` -> ``Studio A 1`` (the session name)."""
    for suffix in (BROWSED_TYPE, SERVICE_TYPE):
        if name.endswith("." + suffix):
            return name[:-len(suffix) - 1]
    return name.rstrip(".")


@dataclass(eq=False)
class _Connection:
    """One held RTSP connection: requests out with a CSeq, their responses matched back;
    a server's ANNOUNCE handed to ``on_announce``."""

    name: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: rtsp.RtspParser
    read_timeout: float
    on_announce: Callable[[_Connection, rtsp.Request], None]
    on_end: Callable[[_Connection, str | None], None]
    cseq: int = 0
    waiting: dict[int, asyncio.Future[rtsp.Response]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    path: str | None = None  # the DESCRIBE path that was found

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def request(self, method: str, url: str) -> rtsp.Response:
        self.cseq += 1
        future: asyncio.Future[rtsp.Response] = asyncio.get_running_loop().create_future()
        self.waiting[self.cseq] = future
        data = (rtsp.build_describe(url, self.cseq) if method == "DESCRIBE"
                else rtsp.build_request(method, url, self.cseq))
        self.writer.write(data)
        try:
            # the whole answer within read_timeout: a server that dribbles it byte by
            # byte (slowloris) is cut off just like one that says nothing
            return await asyncio.wait_for(future, self.read_timeout)
        finally:
            self.waiting.pop(self.cseq, None)

    async def _read(self) -> None:
        reason: str | None = None
        try:
            while True:
                # idle (nothing asked, nothing half-read) a held connection may wait for
                # ANNOUNCE forever; while a message is half-read each read must come
                # within read_timeout. A server dribbling an ANNOUNCE so holds only its
                # own connection, which the next DESCRIBE replaces (answers to our
                # requests have a deadline of their own: request())
                timeout = self.read_timeout if (self.parser.buffered or self.waiting) \
                    else None
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
                if not data:
                    break
                for message in self.parser.feed(data):
                    if isinstance(message, rtsp.Response):
                        self._answered(message)
                    elif message.method == "ANNOUNCE":
                        self.writer.write(rtsp.build_reply(message.cseq))
                        self.on_announce(self, message)
                    else:
                        self.writer.write(rtsp.build_reply(message.cseq, 501,
                                                           "Not Implemented"))
                if self.writer.transport.get_write_buffer_size() > MAX_UNSENT:
                    reason = core.REPLIES_UNREAD
                    log.warning("RAVENNA server does not read our answers; closed",
                                service=self.name)
                    break
        except rtsp.RtspError as exc:
            reason = exc.reason
            log.warning("RAVENNA server sent what RTSP does not allow; closed",
                        service=self.name, reason=exc.reason, error=str(exc))
        except TimeoutError:
            reason = core.TIMEOUT
        except OSError:
            reason = core.CLOSED
        except asyncio.CancelledError:
            self._fail_waiting(core.CLOSED)
            raise
        self._fail_waiting(reason or core.CLOSED)
        self.writer.close()
        self.on_end(self, reason)

    def _answered(self, response: rtsp.Response) -> None:
        future = self.waiting.get(response.cseq) if response.cseq is not None else None
        if future is None and len(self.waiting) == 1 and response.cseq is None:
            future = next(iter(self.waiting.values()))  # a server that drops CSeq
        if future is not None and not future.done():
            future.set_result(response)

    def _fail_waiting(self, reason: str) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(DescribeFailed(reason, f"connection ended ({reason})"))

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


class RavennaBridge:
    """Browse, resolve, describe, follow. ``state``: off, unavailable (no mDNS here),
    on."""

    def __init__(self, hub: Hub, config: RavennaConfig, max_sdp_bytes: int) -> None:
        self.hub = hub
        self.engine = hub.engine
        self.config = config
        self.core = core.RavennaCore(core.Bounds(
            period=config.period, max_services=config.max_services,
            max_per_host=config.max_per_host, max_connections=config.max_connections))
        self.max_sdp_bytes = max_sdp_bytes
        self.state = "off"
        self.outcomes: Counter[str] = Counter()  # what the engine made of each SDP
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._connections: dict[str, _Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._hosts: dict[str, str] = {}  # service -> the address its SDP came from
        self._resolving: set[str] = set()

    # -- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
            self._browser = AsyncServiceBrowser(self._zeroconf.zeroconf, [BROWSED_TYPE],
                                                handlers=[self._on_service])
        except OSError as exc:  # no multicast-capable interface: nothing to browse
            self.state = "unavailable"
            log.info("RAVENNA ingest off: mDNS cannot be browsed here", error=str(exc))
            await self._close_zeroconf()
            return
        self.state = "on"
        log.info("RAVENNA ingest on", browsing=BROWSED_TYPE)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for connection in list(self._connections.values()):
            connection.close()
        self._connections.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._browser is not None:
            await self._browser.async_cancel()
        await self._close_zeroconf()
        if self.state == "on":
            self.state = "off"

    async def _close_zeroconf(self) -> None:
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.async_close()
            self._zeroconf = None

    # -- mDNS ------------------------------------------------------------------------------
    def _on_service(self, zeroconf: Zeroconf, service_type: str, name: str,
                    state_change: ServiceStateChange) -> None:
        now = self.hub.clock.now()
        if state_change is ServiceStateChange.Removed:
            log.info("RAVENNA service withdrawn", service=name)
            self._hosts.pop(name, None)
            self._run(self.core.removed(name, now))
            return
        if state_change is ServiceStateChange.Added:
            log.info("RAVENNA service found", service=name)
            self._run(self.core.added(name, now))
        else:
            self._run(self.core.updated(name, now))
        if self.core.follows(name):  # not refused for a cap
            self._resolve_soon(name)

    def _resolve_soon(self, name: str) -> None:
        """One resolve a service at a time: a flood of record changes must not pile up
        queries."""
        if name not in self._resolving and self._zeroconf is not None:
            self._resolving.add(name)
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        assert self._zeroconf is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            found = await info.async_request(self._zeroconf.zeroconf, RESOLVE_TIMEOUT_MS)
        finally:
            self._resolving.discard(name)
        addresses = info.parsed_scoped_addresses(IPVersion.V4Only) if found else []
        if not addresses or info.port is None:
            log.info("RAVENNA service not resolved; waits for its next record",
                     service=name)
            return
        host = core.pick_address(addresses, info.port)
        if host is None:
            self.core.refusals[core.BAD_ADDRESS] += 1
            log.warning("RAVENNA service points nowhere a device can be; waits for its "
                        "next record", service=name, addresses=addresses[:4],
                        port=info.port)
            return
        self._run(self.core.resolved(name, host, info.port, self.hub.clock.now()))

    # -- actions ------------------------------------------------------------------------
    def _run(self, actions: list[core.Action], changed: bool = False) -> None:
        """Carry out the core's actions; what changed the directory is handed to the hub
        once, so that a row replaced (a new o= identity) is one batch, never two rows."""
        for action in actions:
            if isinstance(action, core.Describe):
                self._spawn(self._describe(action))
            elif isinstance(action, core.Close):
                connection = self._connections.pop(action.name, None)
                if connection is not None:
                    connection.close()
            elif isinstance(action, core.Resolve):
                self._resolve_soon(action.name)
            elif self.engine.remove_ravenna(action.session_id, self.hub.clock.now()):
                self.outcomes["removed"] += 1
                changed = True
        if changed:
            self.hub.after_batch()
        self._arm()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm(self) -> None:
        when = self.core.next_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            delay = max(0.0, when - self.hub.clock.now())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(self.core.due(self.hub.clock.now()))

    # -- RTSP ---------------------------------------------------------------------------
    async def _connect(self, name: str, host: str, port: int) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=READ_SIZE * 2),
                self.config.connect_timeout)
        except TimeoutError:
            raise DescribeFailed(core.TIMEOUT, f"no connection to {host}:{port} within "
                                 f"{self.config.connect_timeout} s") from None
        except OSError as exc:
            raise DescribeFailed(core.CONNECT_FAILED, f"{host}:{port}: {exc}") from None
        parser = rtsp.RtspParser(max_body_bytes=self.max_sdp_bytes)
        connection = _Connection(name, reader, writer, parser, self.config.read_timeout,
                                 self._on_announce, self._on_end)
        connection.start()
        self._connections[name] = connection
        return connection

    async def _describe(self, action: core.Describe) -> None:
        name, host, port = action.name, action.host, action.port
        instance = instance_of(name)
        held = self._connections.get(name)
        try:
            # Each DESCRIBE on a new connection, which then replaces the held one:
            # GStreamer's server answers a DESCRIBE again on one connection from the
            # media it made for the first, so a changed session would never be seen.
            connection = await self._connect(name, host, port)
            if not self.core.follows(name):  # withdrawn while we connected
                self._let_go(connection)
                return
            if held is not None:
                connection.path = held.path
                held.close()
            text, url = await self._ask(connection, instance, host, port)
        except DescribeFailed as exc:
            log.info("RAVENNA DESCRIBE failed", service=name, reason=exc.reason,
                     error=str(exc))
            self._failed(name, exc.reason)
            return
        except TimeoutError:
            self._failed(name, core.TIMEOUT)
            return
        except OSError:
            self._failed(name, core.CONNECT_FAILED)
            return
        except Exception as exc:  # a bug of ours: counted, and the service not stuck busy
            log.error("RAVENNA DESCRIBE raised", service=name, error=repr(exc))
            self._failed(name, "internal_error")
            return
        if not self.core.follows(name):  # withdrawn while we asked: list nothing
            self._let_go(connection)
            return
        self._take(name, text, host, url, announced=False)

    def _let_go(self, connection: _Connection) -> None:
        if self._connections.get(connection.name) is connection:
            del self._connections[connection.name]
        connection.close()

    async def _ask(self, connection: _Connection, instance: str, host: str,
                   port: int) -> tuple[str, str]:
        """DESCRIBE the session: its path percent-encoded, and as written if that is not
        found (GStreamer's server matches a mount with a space only unencoded)."""
        paths = [rtsp.session_path(instance), rtsp.session_path(instance, encoded=False)]
        if connection.path is not None:
            paths = [connection.path]
        response: rtsp.Response | None = None
        for path in dict.fromkeys(paths):
            url = rtsp.url_for(host, port, path)
            response = await connection.request("DESCRIBE", url)
            if response.status == 200:
                connection.path = path
                break
        assert response is not None
        if response.status != 200:
            raise DescribeFailed(core.NOT_FOUND, f"DESCRIBE answered {response.status} "
                                 f"{response.reason[:60]}")
        if response.content_type != "application/sdp":
            raise DescribeFailed(core.NOT_SDP, f"DESCRIBE answered "
                                 f"{response.content_type[:60]!r}, not application/sdp")
        try:
            text = response.body.decode("utf-8")
        except UnicodeDecodeError:
            raise DescribeFailed(core.NOT_SDP, "the SDP is not UTF-8") from None
        return text, url

    def _take(self, name: str, text: str, host: str, url: str, announced: bool) -> None:
        now = self.hub.clock.now()
        outcome, sid = self.engine.put_ravenna(text, host, url, instance_of(name), now)
        self.outcomes[outcome] += 1
        if outcome == DROP_RATE_LIMITED:  # put off, not refused: the row stays
            self._run(self.core.deferred(name, outcome, now))
            return
        if sid is None:
            log.warning("RAVENNA SDP refused", service=name, reason=outcome)
            self._failed(name, outcome)
            return
        self._hosts[name] = host
        self._run(self.core.announced(name, sid, now) if announced
                  else self.core.described(name, sid, now), changed=True)

    def _failed(self, name: str, reason: str) -> None:
        self._run(self.core.failed(name, reason, self.hub.clock.now()))

    def _on_announce(self, connection: _Connection, request: rtsp.Request) -> None:
        if self._connections.get(connection.name) is not connection:
            return
        host = self._hosts.get(connection.name)
        if request.content_type != "application/sdp" or host is None:
            self.core.refusals[core.NOT_SDP] += 1
            return
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            self.core.refusals[core.NOT_SDP] += 1
            return
        log.debug("RAVENNA ANNOUNCE", service=connection.name, url=request.url[:200])
        # where it came from, not the URL the server wrote on its request line
        self._take(connection.name, text, host, self._url(connection), True)

    def _url(self, connection: _Connection) -> str:
        peer = connection.writer.get_extra_info("peername") or ("", 0)
        return rtsp.url_for(str(peer[0]), int(peer[1]), connection.path or "")

    def _on_end(self, connection: _Connection, reason: str | None) -> None:
        if self._connections.get(connection.name) is not connection:
            return  # closed by us
        del self._connections[connection.name]
        now = self.hub.clock.now()
        if reason is not None and reason != core.CLOSED:
            self._run(self.core.failed(connection.name, reason, now))
        else:
            self._run(self.core.closed(connection.name, now))

    # -- reporting -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"state": self.state, **self.core.stats(),
                "sdps": dict(sorted(self.outcomes.items())),
                "refusals": dict(sorted(self.core.refusals.items()))}

    def metrics_lines(self) -> list[str]:
        counts = self.core.stats()
        lines = ["# HELP sapd_ravenna_services RAVENNA service instances followed.",
                 "# TYPE sapd_ravenna_services gauge",
                 f"sapd_ravenna_services {counts['services']}",
                 "# HELP sapd_ravenna_connections RTSP connections open.",
                 "# TYPE sapd_ravenna_connections gauge",
                 f"sapd_ravenna_connections {counts['connections']}",
                 "# HELP sapd_ravenna_sdps_total SDPs from RTSP servers, by what the "
                 "directory made of them.",
                 "# TYPE sapd_ravenna_sdps_total counter"]
        for outcome, count in sorted(self.outcomes.items()):
            lines.append(f'sapd_ravenna_sdps_total{{outcome="{outcome}"}} {count}')
        lines += ["# HELP sapd_ravenna_refusals_total RAVENNA services or answers refused "
                  "or failed, by reason.",
                  "# TYPE sapd_ravenna_refusals_total counter"]
        for reason, count in sorted(self.core.refusals.items()):
            lines.append(f'sapd_ravenna_refusals_total{{reason="{reason}"}} {count}')
        return lines


class RavennaRelay:
    """[ravenna] announce_on_sap: a listener of committed events that keeps the
    announcer re-announcing each RAVENNA row on SAP while the loop guard allows it
    (ravenna_core.should_relay)."""

    def __init__(self, announcer: Announcer, engine: Engine) -> None:
        self.announcer = announcer
        self.engine = engine
        self._identities: dict[str, set[str]] = {}  # o= identity -> relayed row ids

    def on_event(self, event: Event) -> None:
        record = event.record
        if event.kind in ("deleted", "expired"):
            self._stop(record.id, record.identity)
            if record.identity in self._identities:
                self._reconsider(record.identity)
        elif record.ravenna:
            self._consider(record)
        elif record.identity in self._identities:  # someone else on SAP with it
            self._reconsider(record.identity)

    def _consider(self, record: SessionRecord) -> None:
        on_sap = bool(via_of(record.heard_via, SAP))
        own = self.announcer.relays.get(record.id)
        own_source = own.source if own is not None else self.announcer.relay_source(record)
        if not record.sdp or not core.should_relay(
                on_sap, self.engine.sap_sources_of(record.identity), own_source,
                origin=record.origin_address):
            self._stop(record.id, record.identity)
            return
        if self.announcer.relay(record) is not None:
            self._identities.setdefault(record.identity, set()).add(record.id)


    def _reconsider(self, identity: str) -> None:
        for sid in list(self._identities.get(identity, ())):
            record = self.engine.get(sid)
            if record is None:
                self._stop(sid, identity)
            else:
                self._consider(record)

    def _stop(self, sid: str, identity: str) -> None:
        self.announcer.unrelay(sid)
        ids = self._identities.get(identity)
        if ids is not None:
            ids.discard(sid)
            if not ids:
                del self._identities[identity]
