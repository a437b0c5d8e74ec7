"""NMOS IS-04 registration (``[nmos]``): the asyncio edge around the sans-IO core.

A listener of the hub's committed events (:meth:`NmosBridge.on_event` only notes the
session id in a bounded queue; on overflow it asks for a full comparison instead), one
task that maps sessions to resources (nmos_resources.py) and feeds the registration
machine (nmos_registration.py), and an aiohttp client that sends what the machine asks
for and reports each answer back. Answers are read to at most MAX_BODY bytes and every
request ends after the heartbeat interval, so a slow, garbling or flooding registry
costs a back-off, never memory or the receive path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from sapd.bridges.nmos_registration import HEARTBEAT, Registration, Request
from sapd.bridges.nmos_resources import (
    KINDS,
    ClockBook,
    Context,
    Key,
    Mapped,
    Origin,
    Resource,
    Unmappable,
    map_session,
    node_id,
    node_resource,
)
from sapd.config import NmosConfig
from sapd.lifecycle import Event
from sapd.plumbing import logs
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.errors import StoreUnavailable
from sapd.records import DirectoryBackend, SessionRecord, own_record

log = logs.get("sapd.nmos")

API = "/x-nmos/registration/v1.3"
MAX_BODY = 64 * 1024  # bytes of an answer read; the rest is dropped with the connection
BATCH = 500  # sessions mapped per turn of the loop, so the event loop breathes
STOP_TIMEOUT = 2.0


def registration_base(url: str) -> str:
    """``http://H:P`` (or a URL already ending in the API path) -> the API's base."""
    url = url.rstrip("/")
    return url if url.endswith(API) else url + API


def local_address_towards(url: str) -> str:
    """The address of the interface that reaches ``url``'s host (no packet is sent)."""
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"


def machine_id() -> str:
    """This host's stable id (systemd's /etc/machine-id), else its name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text().strip()
            if text:
                return text
    return socket.gethostname()


def mac_of(name: str) -> str:
    try:
        text = Path(f"/sys/class/net/{name}/address").read_text().strip().lower()
    except OSError:
        text = ""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return "00-00-00-00-00-00"
    return "-".join(parts)


class NmosBridge:
    def __init__(self, config: NmosConfig, seed: str, reader: DirectoryBackend,
                 clock: SteadyClock, web_listen: tuple[str, int], public_url: str | None,
                 interfaces: Callable[[], list[str]], label: str,
                 registries: Callable[[], list[str]] | None = None, site: str = "") -> None:
        self.config = config
        self.site = site  # a shared directory: only this site's sessions are ours
        self.node_id = node_id(seed)
        self.reader = reader
        self.clock = clock
        self.web_listen = web_listen
        self.public_url = public_url
        self.interfaces = interfaces
        self.label = label
        # where to register: the configured registry, or what discovery found (in order)
        self._registries = registries or (lambda: [config.registry] if config.registry
                                          else [])
        self.registry: str | None = None
        self.machine = Registration(("node", self.node_id))
        self.clocks = ClockBook()
        self.mapped: dict[str, Mapped] = {}
        self.skipped: dict[str, str] = {}  # session id -> reason
        self.skips: Counter[str] = Counter()  # decisions, by reason
        self.device_uses: Counter[str] = Counter()
        self.overflows = 0
        self.store_waits = 0  # turns that waited for an unreachable directory database
        self._store_away = False
        self._queue: dict[str, None] = {}
        self._resync = True  # start with the whole directory
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.href = ""
        self.manifest_base = ""
        self._node_shape: tuple[Any, ...] = ()

    # -- the hub's side: never blocks -----------------------------------------------------
    def on_event(self, event: Event) -> None:
        if len(self._queue) >= self.config.queue and event.session_id not in self._queue:
            if not self._resync:
                self.overflows += 1
                log.warning("NMOS registration fell behind; comparing the whole directory "
                            "instead", queue=self.config.queue)
            self._resync = True
            self._queue.clear()
        else:  # new, changed, deleted, expired: the store says which, when it is mapped
            self._queue[event.session_id] = None
        self._wake.set()

    # -- start and stop -----------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HEARTBEAT),
            connector=aiohttp.TCPConnector(limit=self.machine.window + 2),
            json_serialize=lambda v: orjson.dumps(v).decode())
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Unregister: DELETE the node (the registry drops what hangs from it, as it
        does when a node's heartbeats stop), within STOP_TIMEOUT."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._sending):
            task.cancel()
        if self._session is not None:
            if self.registry is not None and ("node", self.node_id) in self.machine.registered:
                url = f"{registration_base(self.registry)}/resource/nodes/{self.node_id}"
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with self._session.delete(
                            url, timeout=aiohttp.ClientTimeout(total=STOP_TIMEOUT)) as answer:
                        log.info("unregistered", registry=self.registry, status=answer.status)
            await self._session.close()
            self._session = None

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            failed = self._safe_turn()
            now = self.clock.now()
            timer = self.machine.next_timer()
            delay = 1.0 if timer is None else min(max(timer - now, 0.0), 1.0)
            if (self._queue or self._resync) and not failed:
                delay = 0.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _safe_turn(self) -> bool:
        """One turn; True if it failed (the loop then waits before the next)."""
        try:
            self._turn()
        except StoreUnavailable as exc:  # a shared directory's server: wait, not a bug
            if not self._store_away:
                log.warning("NMOS registration waits for the directory database",
                            error=str(exc))
            self.store_waits += 1
            self._store_away = True
            return True
        except Exception:  # our bug: say so, go on; never take the daemon down
            log.exception("NMOS registration failed a turn")
            self.machine.errors["internal_error"] += 1
            return True
        return False

    def _turn(self) -> None:
        self._choose_registry()
        if self._resync:
            self._compare_all()  # a read that fails leaves it to do
            self._resync = False
        self._map_some()
        self._store_away = False
        self._put_node()
        if self.registry is None:
            return
        for request in self.machine.poll(self.clock.now()):
            task = asyncio.create_task(self._send(self.registry, request))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _choose_registry(self) -> None:
        found = self._registries()
        retry = self.machine.next_timer()
        # failed, and the wait is over: the next registry in line, the wait kept doubling
        failing = self.machine.state == "backoff" and self.registry in found and \
            len(found) > 1 and retry is not None and retry <= self.clock.now()
        if self.registry in found and not failing:
            return
        if not found:
            return  # keep the last one: discovery may only have blinked
        if failing and self.registry is not None:
            choice = found[(found.index(self.registry) + 1) % len(found)]  # the next one
        else:
            choice = found[0]
        if choice == self.registry:
            return
        log.info("NMOS registry", registry=choice, previous=self.registry)
        self.registry = choice
        self._address(choice)
        self.machine.reset(fresh=True, keep_backoff=failing)

    def _address(self, registry: str) -> None:
        host, port = self.web_listen
        if self.public_url:
            self.href = self.public_url.rstrip("/") + "/"
        else:
            if host in ("0.0.0.0", "::"):
                host = local_address_towards(registry)
            shown = f"[{host}]" if ":" in host else host
            self.href = f"http://{shown}:{port}/"
        self.manifest_base = self.href + "v1/sessions/"
        for sid in list(self.mapped):  # manifest_href moved with the address
            self._queue[sid] = None

    def _endpoint(self) -> tuple[str, int]:
        url = urllib.parse.urlsplit(self.href)
        default = 443 if url.scheme == "https" else 80
        return url.hostname or "127.0.0.1", url.port or default

    def _put_node(self) -> None:
        if not self.href:
            return
        names = self.interfaces()
        # every turn of the loop comes here: rebuild only when something it shows moved
        shape = (self.href, tuple(names), tuple(self.clocks.uses))
        if shape == self._node_shape:
            return
        self._node_shape = shape
        host, port = self._endpoint()
        node = node_resource(self.node_id, self.label, self.href, host, port,
                             [(name, mac_of(name)) for name in names],
                             self.clocks.node_clocks())
        self.machine.put(node)

    # -- sessions -> resources ------------------------------------------------------------
    def _compare_all(self) -> None:
        # this site's only: other sites' changes never reach on_event
        live = {record.id for record in self.reader.iter_all(light=True, own=True)}
        for sid in [*self.mapped, *self.skipped]:
            if sid not in live:
                self._queue[sid] = None
        for sid in live:
            self._queue[sid] = None

    def _map_some(self) -> None:
        if not self.href:
            return  # no registry yet: the address (hence manifest_href) is unknown
        for _ in range(min(BATCH, len(self._queue))):
            sid = next(iter(self._queue))
            record = own_record(self.reader, sid, self.site)  # a read that fails keeps it
            del self._queue[sid]
            if record is None:
                self._drop(sid)
            else:
                self._map(record)

    def _map(self, record: SessionRecord) -> None:
        names = tuple(self.interfaces())
        heard = tuple(dict.fromkeys(i for _, _, i, _ in record.heard_via if i in names))
        vias = tuple(dict.fromkeys(via for via, *_ in record.heard_via)) or ("sap",)
        origin = Origin(record.id, record.identity, record.origin_address, vias=vias,
                        sap_group=record.sap_group, interfaces=heard)
        try:
            mapped = map_session(record.sdp, origin,
                                 Context(self.node_id, self.manifest_base, names), self.clocks)
        except Unmappable as exc:
            if self.skipped.get(record.id) != exc.reason:
                # the first of each reason at info, the rest at debug: a campus full of
                # VLC's audio+video sessions would fill the log otherwise
                level = log.debug if self.skips[exc.reason] else log.info
                self.skips[exc.reason] += 1
                level("not registered with NMOS", session=record.id, reason=exc.reason,
                      detail=exc.detail)
            self._drop(record.id)
            self.skipped[record.id] = exc.reason
            return
        self.skipped.pop(record.id, None)
        previous = self.mapped.get(record.id)
        if previous is not None and previous.device.id != mapped.device.id:
            self._drop(record.id)
            previous = None
        if previous is None:
            self.device_uses[mapped.device.id] += 1
            if self.device_uses[mapped.device.id] == 1:  # the first session names it
                self.machine.put(mapped.device)
            self.clocks.use(mapped.clock, +1)
        elif previous.clock != mapped.clock:
            self.clocks.use(previous.clock, -1)
            self.clocks.use(mapped.clock, +1)
        self.mapped[record.id] = mapped
        for resource in (mapped.source, mapped.flow, mapped.sender):
            self.machine.put(resource)

    def _drop(self, sid: str) -> None:
        self.skipped.pop(sid, None)
        mapped = self.mapped.pop(sid, None)
        if mapped is None:
            return
        for resource in (mapped.sender, mapped.flow, mapped.source):
            self.machine.remove(resource.key)
        self.clocks.use(mapped.clock, -1)
        self.device_uses[mapped.device.id] -= 1
        if self.device_uses[mapped.device.id] <= 0:
            del self.device_uses[mapped.device.id]
            self.machine.remove(mapped.device.key)

    # -- HTTP -------------------------------------------------------------------------------
    async def _send(self, registry: str, request: Request) -> None:
        assert self._session is not None
        url = registration_base(registry) + request.path
        body = orjson.dumps(request.body) if request.body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with self._session.request(request.method, url, data=body,
                                             headers=headers,
                                             allow_redirects=False) as answer:
                # a registry's answers are small JSON: more is not one (the rest goes
                # with the connection, unread)
                head = await answer.content.read(MAX_BODY + 1)
                status = answer.status
                if len(head) > MAX_BODY or (answer.content_length or 0) > MAX_BODY:
                    self.machine.failed(request.id, "oversize_answer", self.clock.now(),
                                        f"{registry}: an answer over {MAX_BODY} bytes")
                    self._wake.set()
                    return
        except TimeoutError:
            self.machine.failed(request.id, "timeout", self.clock.now())
        except aiohttp.ClientConnectionError as exc:
            self.machine.failed(request.id, "connection", self.clock.now(),
                                f"{registry}: {exc!s}"[:300])
        except (aiohttp.ClientError, ValueError) as exc:  # an answer that is not HTTP
            self.machine.failed(request.id, "bad_answer", self.clock.now(),
                                f"{registry}: {exc!s}"[:300])
        else:
            self.machine.response(request.id, status, self.clock.now())
        self._wake.set()

    # -- views: the Node API, stats, metrics ------------------------------------------------
    def resources(self, kind: str) -> list[dict[str, Any]]:
        """The Node API's view: what sapd registers (or will), with the version sent."""
        return [self._with_version(r) for (k, _), r in self.machine.desired.items()
                if k == kind]

    def resource(self, kind: str, rid: str) -> dict[str, Any] | None:
        found = self.machine.desired.get((kind, rid))
        return self._with_version(found) if found is not None else None

    def _with_version(self, resource: Resource) -> dict[str, Any]:
        key: Key = resource.key
        return {**resource.data, "version": self.machine.version_of(key) or "0:0"}

    def stats(self) -> dict[str, Any]:
        machine = self.machine
        return {"state": machine.state, "registry": self.registry, "node_id": self.node_id,
                "href": self.href or None, "registered": machine.registered_by_kind(),
                "pending": machine.pending, "queue": len(self._queue),
                "skipped": dict(sorted(Counter(self.skipped.values()).items())),
                "skips": dict(sorted(self.skips.items())),
                "errors": dict(sorted(machine.errors.items())),
                "requests": dict(sorted(machine.counts.items())),
                "overflows": self.overflows, "store_waits": self.store_waits,
                "last_error": machine.last_error}

    def metrics_lines(self) -> list[str]:
        machine = self.machine
        registered = machine.registered_by_kind()
        lines = ["# HELP sapd_nmos_registered Resources the NMOS registry holds, by type.",
                 "# TYPE sapd_nmos_registered gauge"]
        lines += [f'sapd_nmos_registered{{type="{kind}"}} {registered[kind]}'
                  for kind in KINDS]
        lines += ["# HELP sapd_nmos_skipped Sessions not registered, by reason.",
                  "# TYPE sapd_nmos_skipped gauge"]
        lines += [f'sapd_nmos_skipped{{reason="{k}"}} {v}'
                  for k, v in sorted(Counter(self.skipped.values()).items())]
        lines += ["# HELP sapd_nmos_errors_total Registry failures, by reason.",
                  "# TYPE sapd_nmos_errors_total counter"]
        lines += [f'sapd_nmos_errors_total{{reason="{k}"}} {v}'
                  for k, v in sorted(machine.errors.items())]
        lines += ["# HELP sapd_nmos_pending Resources waiting to be registered or deleted.",
                  "# TYPE sapd_nmos_pending gauge", f"sapd_nmos_pending {machine.pending}",
                  "# HELP sapd_nmos_up 1 while every resource is registered and heartbeats "
                  "are answered.",
                  "# TYPE sapd_nmos_up gauge",
                  f"sapd_nmos_up {int(machine.state == 'registered')}"]
        return lines
