"""An async MADCAP client: the Windows client API (McastEnumerateScopes,
McastRequestAddress, McastRenewAddress, McastReleaseAddress) in Python terms.

    async with MadcapClient() as client:              # multicast discovery
        scopes = await client.enumerate_scopes()
        lease = await client.request(scopes[0].scope_id, count=2)
        async with client.keep(lease):                 # renewed until the block ends
            ...                                        # then released

Retransmission follows RFC 2730: 4 s, doubling, capped at 16 s, at most three
retransmissions, abandoned after 60 s; a NAK stops retransmission at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from madcap import wire
from madcap.wire import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    ErrorCode,
    IPAddress,
    MadcapDecodeError,
    Message,
    MsgType,
    Opt,
    ScopeName,
    coalesce,
    new_lease_id,
)

LOCAL_SCOPE_SERVER = "239.255.255.254"  # the IPv4 Local Scope's MADCAP server address
DEFAULT_TTL = 16


class MadcapError(Exception):
    """No usable answer."""


class MadcapTimeout(MadcapError):
    """No server answered within the RFC's retransmission window."""


class MadcapNak(MadcapError):
    """The server refused, with an RFC 2730 error."""

    def __init__(self, error: wire.ErrorInfo | None) -> None:
        self.error = error
        code = error.code if error else -1
        try:
            name = ErrorCode(code).name.replace("_", " ").lower()
        except ValueError:
            name = f"error {code}"
        detail = ""
        if error is not None and error.option not in (None, 0xFFFF):
            try:
                detail = f" (option {Opt(error.option).name.lower()})"
            except ValueError:
                detail = f" (option {error.option})"
        super().__init__(f"server refused: {name}{detail}")


@dataclass(frozen=True)
class Retransmit:
    """RFC 2730 section 4.1: initial delay, doubling to a cap, a retry limit, a deadline."""

    initial: float = 4.0
    cap: float = 16.0
    retries: int = 3
    give_up: float = 60.0

    def delays(self) -> list[float]:
        out, delay = [], self.initial
        for _ in range(self.retries + 1):
            out.append(delay)
            delay = min(delay * 2, self.cap)
        return out


@dataclass(frozen=True)
class ScopeInfo:
    scope_id: IPAddress
    last: IPAddress
    ttl: int
    names: tuple[ScopeName, ...]
    server: tuple[str, int]

    @property
    def name(self) -> str:
        default = [n for n in self.names if n.default] or list(self.names)
        return default[0].name if default else str(self.scope_id)

    def to_json(self) -> dict[str, Any]:
        return {"scope_id": str(self.scope_id), "last": str(self.last), "ttl": self.ttl,
                "name": self.name, "server": f"{self.server[0]}:{self.server[1]}",
                "names": [{"language": n.language, "name": n.name, "default": n.default}
                          for n in self.names]}


@dataclass
class LeaseInfo:
    lease_id: bytes
    server: tuple[str, int]
    scope_id: IPAddress
    addresses: list[str]
    start: float
    end: float
    history: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"lease_id": self.lease_id.hex(), "server": f"{self.server[0]}:{self.server[1]}",
                "scope_id": str(self.scope_id), "addresses": self.addresses,
                "start": self.start, "end": self.end}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LeaseInfo:
        host, _, port = data["server"].rpartition(":")
        return cls(bytes.fromhex(data["lease_id"]), (host.strip("[]"), int(port)),
                   ipaddress.ip_address(data["scope_id"]), list(data["addresses"]),
                   float(data["start"]), float(data["end"]))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._deliver = deliver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._deliver(data, (str(addr[0]), int(addr[1])))


class MadcapClient:
    def __init__(self, server: tuple[str, int] | None = None, *,
                 interface: str | None = None, ttl: int = DEFAULT_TTL,
                 family: int = FAMILY_IPV4, server_group: str = LOCAL_SCOPE_SERVER,
                 port: int = wire.PORT, retransmit: Retransmit | None = None,
                 collect: float = 0.5) -> None:
        self.server = server
        self.interface = interface
        self.ttl = ttl
        self.family = family
        self.server_group = server_group
        self.port = port
        self.retransmit = retransmit or Retransmit()
        self.collect = collect  # how long to gather further answers to a multicast GETINFO
        self._xid = random.getrandbits(32)
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: list[tuple[int, bytes, asyncio.Queue[tuple[Message,
                                                                  tuple[str, int]]]]] = []

    async def __aenter__(self) -> MadcapClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        v6 = self.family == FAMILY_IPV6
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
            if self.interface:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                                socket.if_nametoindex(self.interface))
            sock.bind(("::", 0))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            if self.interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack(
                    "@4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex(self.interface)))
            sock.bind(("0.0.0.0", 0))
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._deliver), sock=sock)
        self._transport = transport

    def attach(self, transport: asyncio.DatagramTransport) -> None:
        """Send through ``transport`` instead of a socket of our own (an in-memory pair in
        tests, or a socket the caller owns); hand its answers to ``datagram_received``."""
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._deliver(data, addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = wire.decode(data)
        except MadcapDecodeError:
            return  # clients ignore anything malformed
        if msg.msgtype not in (MsgType.OFFER, MsgType.ACK, MsgType.NAK):
            return
        for xid, lease_id, queue in self._waiters:
            if msg.xid == xid and msg.lease_id == lease_id:
                queue.put_nowait((msg, addr))

    def _next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    def _target(self, multicast: bool) -> tuple[str, int]:
        if self.server is not None and not multicast:
            return self.server
        return (self.server_group, self.port)

    async def _transact(self, msg: Message, target: tuple[str, int],
                        gather: float = 0.0) -> list[tuple[Message, tuple[str, int]]]:
        """Send and retransmit (byte-identical) until an answer; optionally gather more."""
        assert self._transport is not None, "use 'async with MadcapClient()'"
        assert msg.lease_id is not None
        queue: asyncio.Queue[tuple[Message, tuple[str, int]]] = asyncio.Queue()
        waiter = (msg.xid, msg.lease_id, queue)
        self._waiters.append(waiter)
        data = wire.encode(msg)
        deadline = time.monotonic() + self.retransmit.give_up
        try:
            for delay in self.retransmit.delays():
                self._transport.sendto(data, target)
                wait = min(delay, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    first = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    continue
                answers = [first]
                if gather:
                    end = time.monotonic() + gather
                    while (left := end - time.monotonic()) > 0:
                        try:
                            answers.append(await asyncio.wait_for(queue.get(), left))
                        except TimeoutError:
                            break
                return answers
            raise MadcapTimeout(f"no answer from {target[0]}:{target[1]} "
                                f"(xid {msg.xid:#010x})")
        finally:
            self._waiters.remove(waiter)

    # -- the four calls -----------------------------------------------------------------------
    async def enumerate_scopes(self, language: str | None = None) -> list[ScopeInfo]:
        """GETINFO for the scope list: unicast to the server, or multicast gathering every
        server's answer."""
        msg = Message(msgtype=MsgType.GETINFO, xid=self._next_xid(), family=self.family,
                      lease_id=new_lease_id(), language=language,
                      option_request=(Opt.SCOPE_LIST, Opt.CURRENT_TIME))
        multicast = self.server is None
        answers = await self._transact(msg, self._target(multicast),
                                       gather=self.collect if multicast else 0.0)
        scopes: list[ScopeInfo] = []
        for reply, addr in answers:
            if reply.msgtype == MsgType.NAK:
                raise MadcapNak(reply.error)
            for entry in reply.scope_list or ():
                if not any(s.scope_id == entry.scope_id and s.server == addr for s in scopes):
                    scopes.append(ScopeInfo(entry.scope_id, entry.last, entry.ttl,
                                            entry.names, addr))
        return scopes

    async def request(self, scope_id: IPAddress | str, count: int = 1,
                      min_count: int | None = None, lease_time: int | None = None,
                      start_time: float | None = None, min_lease_time: int | None = None,
                      max_start_time: float | None = None,
                      addresses: list[str] | None = None) -> LeaseInfo:
        """Allocate. With a known server: unicast REQUEST. Otherwise DISCOVER by multicast,
        take the first OFFER, and multicast the REQUEST naming that server."""
        scope = ipaddress.ip_address(scope_id) if isinstance(scope_id, str) else scope_id
        lease_id = new_lease_id()
        now = int(time.time())
        wanted = coalesce([int(ipaddress.ip_address(a)) for a in addresses], scope.version) \
            if addresses else None
        terms: dict[str, Any] = {
            "lease_time": lease_time, "min_lease_time": min_lease_time,
            "start_time": int(start_time) if start_time else None,
            "max_start_time": int(max_start_time) if max_start_time else None,
            "num_addresses": (min_count if min_count is not None else count, count)
            if count != 1 or min_count is not None else None,
            "address_ranges": wanted}
        if start_time or max_start_time:
            terms["current_time"] = now
        server_id: IPAddress | None = None
        target = self._target(multicast=False)
        if self.server is None:
            discover = Message(msgtype=MsgType.DISCOVER, xid=self._next_xid(),
                               family=self.family, lease_id=lease_id, scope=scope, **terms)
            (offer, addr), *_ = await self._transact(discover, self._target(True))
            if offer.msgtype == MsgType.NAK:
                raise MadcapNak(offer.error)
            server_id = offer.server_id
            target = self._target(True)
            self.server = (addr[0], addr[1])  # renew and release go to it by unicast
        request = Message(msgtype=MsgType.REQUEST, xid=self._next_xid(), family=self.family,
                          lease_id=lease_id, scope=scope, server_id=server_id, **terms)
        (ack, addr), *_ = await self._transact(request, target)
        if ack.msgtype != MsgType.ACK:
            raise MadcapNak(ack.error)
        return self._lease_from(ack, addr, scope, now)

    def _lease_from(self, ack: Message, addr: tuple[str, int], scope: IPAddress,
                    now: float) -> LeaseInfo:
        start = float(ack.start_time) if ack.start_time else float(now)
        if ack.start_time and ack.current_time:
            start = time.time() + (ack.start_time - ack.current_time)  # in our clock
        end = start + (ack.lease_time or 0)
        server = self.server if self.server else addr
        return LeaseInfo(ack.lease_id or b"", server, scope,
                         [str(a) for r in ack.address_ranges or () for a in r.addresses()],
                         start, end)

    async def renew(self, lease: LeaseInfo, lease_time: int | None = None) -> LeaseInfo:
        """RENEW by unicast to the server that granted the lease."""
        msg = Message(msgtype=MsgType.RENEW, xid=self._next_xid(), family=self.family,
                      lease_id=lease.lease_id, lease_time=lease_time)
        (ack, addr), *_ = await self._transact(msg, lease.server)
        if ack.msgtype != MsgType.ACK:
            raise MadcapNak(ack.error)
        renewed = self._lease_from(ack, addr, lease.scope_id, time.time())
        renewed.server = lease.server
        return renewed

    async def release(self, lease: LeaseInfo) -> None:
        msg = Message(msgtype=MsgType.RELEASE, xid=self._next_xid(), family=self.family,
                      lease_id=lease.lease_id)
        (ack, _), *_ = await self._transact(msg, lease.server)
        if ack.msgtype != MsgType.ACK:
            raise MadcapNak(ack.error)

    @contextlib.asynccontextmanager
    async def keep(self, lease: LeaseInfo, lease_time: int | None = None,
                   on_renewed: Callable[[LeaseInfo], None] | None = None
                   ) -> AsyncIterator[LeaseInfo]:
        """Keep a lease renewed (at half its remaining time) while the block runs; release
        it afterwards. A failed renewal is retried until the lease would end."""
        current = lease

        async def renewer() -> None:
            nonlocal current
            while True:
                remaining = current.end - time.time()
                await asyncio.sleep(max(1.0, remaining / 2))
                try:
                    current = await self.renew(current, lease_time)
                    if on_renewed is not None:
                        on_renewed(current)
                except MadcapError:
                    if current.end - time.time() <= 0:
                        raise
        task = asyncio.create_task(renewer())
        try:
            yield current
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MadcapError):
                await task
            with contextlib.suppress(MadcapError):
                await self.release(current)
