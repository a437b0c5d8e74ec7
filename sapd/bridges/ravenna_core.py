"""RAVENNA ingest's lifecycle, sans-IO: which advertised sessions exist, when each is
described again, and when it is dropped. Fed mDNS and RTSP events with timestamps;
returns actions for the asyncio edge (sapd/bridges/ravenna.py) to carry out.

One service instance (``_ravenna_session._sub._rtsp._tcp``) is followed over one RTSP
connection at a time: resolve, DESCRIBE ``/by-name/<instance>``, keep the connection for
ANNOUNCE, DESCRIBE again every ``period`` and at once when its mDNS records change. The
session is dropped when the service is withdrawn, or when the server no longer answers
(a failed DESCRIBE or a connection that cannot be made again): RAVENNA rows never expire
by SAP's timers. Bounds: services followed, services per host, connections at once; a
refusal is counted by reason and retried when room frees (nothing else is lost).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

# Refusal and failure reasons (counter labels, beside the RTSP codec's)
SERVICE_CAP = "service_cap"
HOST_CAP = "host_cap"
CONNECTION_CAP = "connection_cap"
CONNECT_FAILED = "connect_failed"
TIMEOUT = "timeout"
NOT_FOUND = "describe_status"  # a DESCRIBE answered other than 200
NOT_SDP = "not_sdp"
CLOSED = "connection_closed"
BAD_ADDRESS = "bad_address"  # resolved to nowhere a device can be (port 0, 0.0.0.0, ...)
REPLIES_UNREAD = "replies_unread"  # the server sends requests and never reads our answers


@dataclass(frozen=True, slots=True)
class Bounds:
    period: float = 30.0  # seconds between DESCRIBEs of a session without ANNOUNCE
    max_services: int = 4096  # service instances followed (and waiting) at once
    max_per_host: int = 256  # sessions one host (RTSP server address) may have listed
    max_connections: int = 256  # RTSP connections open at once
    retry_floor: float = 1.0  # first retry after a failure; doubles up to ``period``


@dataclass(frozen=True, slots=True)
class Describe:
    """Open (or reuse) the service's connection and DESCRIBE its session."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Close:
    name: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Remove this directory row's RAVENNA path (the engine decides what is left)."""

    name: str
    session_id: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """Resolve this service (again): it was refused for a cap and room has freed."""

    name: str


Action = Describe | Close | Drop | Resolve

WAITING = "waiting"  # seen on mDNS, not resolved yet (or refused for a cap: retried)
READY = "ready"  # resolved, waits for its DESCRIBE time
BUSY = "busy"  # a DESCRIBE is in flight


@dataclass(slots=True)
class _Service:
    name: str
    host: str | None = None
    port: int | None = None
    state: str = WAITING
    due: float | None = None  # next DESCRIBE
    session_id: str | None = None  # the directory row it feeds, once described
    failures: int = 0
    connected: bool = False  # holds a connection (counts against max_connections)
    again: bool = False  # its records changed while a DESCRIBE was in flight
    described_at: float = 0.0  # the last answer taken
    quick_closes: int = 0  # held connections the server closed within a period, in a row
    capped_on: str | None = None  # refused for the host cap on this host: waits for room


@dataclass(slots=True)
class RavennaCore:
    bounds: Bounds = field(default_factory=Bounds)
    refusals: Counter[str] = field(default_factory=Counter)
    _services: dict[str, _Service] = field(default_factory=dict)
    # names refused for the service cap, oldest first (mDNS says Added only once): the
    # first is followed when room frees. As many as max_services; past that, forgotten.
    _refused: dict[str, None] = field(default_factory=dict)

    # -- queries ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._services)

    def follows(self, name: str) -> bool:
        return name in self._services

    def session_of(self, name: str) -> str | None:
        service = self._services.get(name)
        return service.session_id if service else None

    @property
    def connections(self) -> int:
        return sum(1 for s in self._services.values() if s.connected or s.state == BUSY)

    def next_timer(self) -> float | None:
        dues = [s.due for s in self._services.values() if s.due is not None
                and s.state == READY]
        return min(dues) if dues else None

    def stats(self) -> dict[str, int]:
        services = self._services.values()
        return {"services": len(self._services),
                "sessions": sum(1 for s in services if s.session_id is not None),
                "connections": self.connections}

    # -- mDNS ------------------------------------------------------------------------
    def added(self, name: str, now: float) -> list[Action]:
        if name in self._services:
            return self.updated(name, now)
        if len(self._services) >= self.bounds.max_services:
            self.refusals[SERVICE_CAP] += 1
            self._refused.pop(name, None)
            self._refused[name] = None
            if len(self._refused) > self.bounds.max_services:
                del self._refused[next(iter(self._refused))]
            return []
        self._services[name] = _Service(name)
        return []

    def updated(self, name: str, now: float) -> list[Action]:
        """Its records changed (TXT, SRV, address): describe again now."""
        service = self._services.get(name)
        if service is None:
            return self.added(name, now)
        if service.state == READY:
            service.due = now
        elif service.state == BUSY:  # the answer on its way may predate the change
            service.again = True
        return self.due(now)

    def resolved(self, name: str, host: str, port: int, now: float) -> list[Action]:
        service = self._services.get(name)
        if service is None:
            return []
        actions: list[Action] = []
        if (service.host, service.port) != (host, port):
            if service.state == BUSY:
                # the DESCRIBE in flight is answered (or fails) on its own; the next one
                # goes to the new place at once. Closing it would drop the row.
                service.again = True
            elif service.connected:
                service.connected = False  # moved: the old connection is to the wrong place
                actions.append(Close(name))
        if service.host != host:
            # every service on that host counts, described or not: services resolved
            # before the first DESCRIBE is answered must not all get through
            on_host = sum(1 for s in self._services.values()
                          if s.host == host and s is not service)
            if on_host >= self.bounds.max_per_host:
                self.refusals[HOST_CAP] += 1
                if (service.state == BUSY or service.connected) and not actions:
                    actions.append(Close(name))  # moved onto a full host: let go of it
                old, service.session_id = service.session_id, None
                actions += self._release(name, old)
                service.host, service.port, service.state = None, None, WAITING
                service.due, service.connected, service.again = None, False, False
                service.capped_on = host
                return actions
        service.capped_on = None
        service.host, service.port = host, port
        if service.state != BUSY:
            service.state = READY
            service.due = now
        return actions + self.due(now)

    def removed(self, name: str, now: float) -> list[Action]:
        self._refused.pop(name, None)
        service = self._services.pop(name, None)
        if service is None:
            return []
        actions: list[Action] = self._room_freed(service.host)
        if service.connected or service.state == BUSY:
            actions.append(Close(name))
        actions += self._release(name, service.session_id)
        return actions + self.due(now)

    # -- RTSP ------------------------------------------------------------------------
    def due(self, now: float) -> list[Action]:
        """DESCRIBEs whose time has come, as far as the connection cap allows."""
        actions: list[Action] = []
        in_use = self.connections
        for service in self._services.values():
            if service.state != READY or service.due is None or service.due > now:
                continue
            if not service.connected:
                if in_use >= self.bounds.max_connections:
                    self.refusals[CONNECTION_CAP] += 1
                    service.due = now + self.bounds.retry_floor
                    continue
                in_use += 1
            assert service.host is not None and service.port is not None
            service.state = BUSY
            service.due = None
            actions.append(Describe(service.name, service.host, service.port))
        return actions

    def described(self, name: str, session_id: str, now: float) -> list[Action]:
        """A DESCRIBE (or an ANNOUNCE) gave an SDP the directory took as ``session_id``.
        A different id than before (a new o= identity) drops the old row's path."""
        service = self._services.get(name)
        if service is None:
            return self._release(name, session_id)  # withdrawn while we asked
        actions: list[Action] = []
        if service.session_id is not None and service.session_id != session_id:
            old, service.session_id = service.session_id, session_id
            actions += self._release(name, old)
        service.session_id = session_id
        service.failures = 0
        service.connected = True
        service.described_at = now
        if service.state == BUSY:
            service.state = READY
            service.due = now if service.again else now + self.bounds.period
            service.again = False
        return actions

    def announced(self, name: str, session_id: str, now: float) -> list[Action]:
        """The server pushed an SDP (ANNOUNCE): as a DESCRIBE, and it moves the next one."""
        actions = self.described(name, session_id, now)
        service = self._services.get(name)
        if service is not None and service.state == READY:
            service.due = now + self.bounds.period
        return actions

    def deferred(self, name: str, reason: str, now: float) -> list[Action]:
        """The directory put an answer off (rate limited): the row stays as it was and
        the session is described again after ``retry_floor``, which takes the latest."""
        self.refusals[reason] += 1
        service = self._services.get(name)
        if service is None:
            return []
        if service.state == BUSY:
            service.state = READY
            service.connected = True
        if service.state == READY:
            soon = now + self.bounds.retry_floor
            service.due = soon if service.due is None else min(service.due, soon)
        return []

    def failed(self, name: str, reason: str, now: float) -> list[Action]:
        """A DESCRIBE did not give a session (refused, timed out, not 200, not an SDP
        the directory takes, a hostile answer) or the connection ended: the server no
        longer serves it, so its row goes; tried again after a pause that grows."""
        self.refusals[reason] += 1
        service = self._services.get(name)
        if service is None:
            return []
        actions: list[Action] = []
        if service.connected or service.state == BUSY:
            actions.append(Close(name))
        service.connected = False
        old, service.session_id, service.again = service.session_id, None, False
        actions += self._release(name, old)
        pause = min(self.bounds.period, self.bounds.retry_floor * 2 ** min(service.failures, 16))
        service.failures += 1
        if service.host is not None:
            service.state = READY
            service.due = now + pause
        return actions + self.due(now)

    def _room_freed(self, host: str | None) -> list[Action]:
        """A service went: the first refused for the service cap is followed, and one
        refused for the host cap on ``host`` is resolved again."""
        actions: list[Action] = []
        if self._refused and len(self._services) < self.bounds.max_services:
            name = next(iter(self._refused))
            del self._refused[name]
            self._services[name] = _Service(name)
            actions.append(Resolve(name))
        if host is not None:
            waiting = next((s for s in self._services.values() if s.capped_on == host), None)
            if waiting is not None:
                waiting.capped_on = None
                actions.append(Resolve(waiting.name))
        return actions

    def _release(self, name: str, session_id: str | None) -> list[Action]:
        """``name`` no longer feeds ``session_id``: its row goes unless another service
        still serves the same SDP (one row, two names)."""
        if session_id is None or any(s.session_id == session_id
                                     for s in self._services.values()):
            return []
        return [Drop(name, session_id)]

    def closed(self, name: str, now: float) -> list[Action]:
        """The server closed a held connection: describe again (a new connection) now;
        if that fails too, :meth:`failed` drops the row."""
        service = self._services.get(name)
        if service is None or not service.connected:
            return []
        service.connected = False
        if service.state == READY:
            # at once when it was held a while (the device may be gone); a server that
            # closes after each answer is paused, doubling up to the period, or it
            # would be reconnected to as fast as it answers
            if now - service.described_at >= self.bounds.period:
                service.quick_closes = 0
            pause = 0.0 if service.quick_closes == 0 else min(
                self.bounds.period,
                self.bounds.retry_floor * 2 ** min(service.quick_closes - 1, 16))
            service.quick_closes += 1
            soon = now + pause
            service.due = soon if service.due is None else min(service.due, soon)
        return self.due(now)


def pick_address(addresses: list[str], port: int) -> str | None:
    """The first address a RAVENNA device can be reached at over the network, or None:
    never port 0, the unspecified address (connect() takes it as this host), loopback (a
    record from the LAN must not point sapd at its own host's local services; a server
    on this host is advertised at its LAN address), multicast, broadcast or reserved."""
    if not 0 < port < 65536:
        return None
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (address.is_unspecified or address.is_loopback or address.is_multicast
                or address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255")):
            return str(address)
    return None


def should_relay(on_sap: bool, sap_sources: list[str], own_source: str,
                 origin: str = "") -> bool:
    """[ravenna] announce_on_sap, the loop guard: re-announce a RAVENNA row on SAP only
    while nobody else does. Not when the row is itself heard on SAP (the device announces
    it), nor when another host announces the same o= identity from a lower address
    (another sapd relaying it: of two, the lower keeps it, so they never take turns).
    Our own re-announcements never come back as SAP rows (the own-packet filter).
    Nor when the host its o= names (``origin``) announces it on SAP: the original is
    heard already, whatever an RTSP server elsewhere says of it."""
    if on_sap or (origin and origin in sap_sources):
        return False
    return not any(_address_key(source) < _address_key(own_source)
                   for source in sap_sources if source != own_source)


def _address_key(text: str) -> tuple[int, int]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return (9, 0)
    return (address.version, int(address))
