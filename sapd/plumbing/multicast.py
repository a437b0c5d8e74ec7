"""Multicast sockets and interfaces: the asyncio edge of sapd.

- Receiving sockets per address family, bound to the SAP port with address reuse
  (other SAP listeners on the host keep working) and IP_MULTICAST_ALL off (each socket
  gets only the groups it joined, on the interfaces it joined them on).
- Memberships are (group, interface index) pairs kept in step with the interface set;
  pyroute2 lists interfaces and a netlink watcher thread reports changes. Linux caps
  IPv4 memberships per socket (net.ipv4.igmp_max_memberships, 20): a join refused with
  ENOBUFS goes to the next socket of the family, opened when needed, so the eighth
  interface is heard like the first. Each membership is on one socket: no datagram is
  read twice. Every socket has the same drain (one reader callback per wake-up).
- Each wake-up drains a socket until EAGAIN or DRAIN_BUDGET seconds: the default
  selector loop otherwise costs one loop iteration per datagram (~19k/s measured here
  versus ~139k/s), and the budget gives the loop's other callbacks (the control API) a
  turn every few milliseconds during a flood (1,024 new sessions a drain held it ~70 ms).
  A socket still holding datagrams when its budget ran out is behind;
  :meth:`MulticastReceiver.queue_delay` says how long its latest datagram waited in the
  kernel (SIOCGSTAMP: one ioctl a drain, no ancillary data per datagram), and the hub
  sheds load on it.
- Kernel drops are counted: :attr:`MulticastReceiver.kernel_drops` sums the sockets'
  drop counters (datagrams the kernel discarded for a full receive buffer), read with
  SO_MEMINFO when asked. SO_RXQ_OVFL carries the same counter, but only on the next
  datagram read: the drops at a flood's end would stay untold until another came.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sapd.plumbing import logs

log = logs.get("sapd.multicast")

IP_MULTICAST_ALL = 49  # not exported by Python's socket module
IP_PKTINFO = 8
SO_RCVBUFFORCE = 33
IPV6_MULTICAST_ALL = 29
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
SO_MEMINFO = 55  # struct sk_meminfo: nine u32, the last the socket's drops (Linux >= 4.6)
SK_MEMINFO = struct.Struct("@9I")
SIOCGSTAMP = 0x8906  # the receive time of the latest datagram read (struct timeval)
KERNEL_DROPS = "kernel_receive_buffer"  # the drop reason /v1/stats and /metrics show
DRAIN_BUDGET = 0.002  # seconds of datagrams per wake-up, so the loop's others get turns
DRAIN_CHECK = 8  # datagrams between looks at the clock (~60 ns a look; a new session ~70 us)
# Receiving sockets per family: 20 memberships each (Linux's default) make 5,120 (group,
# interface) pairs, more than any host has; the bound keeps a runaway from taking fds.
MAX_SOCKETS = 256
ANCILLARY = 64  # room for one in_pktinfo or in6_pktinfo (CMSG_SPACE 32 and 40)
RECEIVE_BUFFER = 4 * 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A datagram's bytes; with pktinfo, what socket.recvmsg returned (see packet_info).
DatagramHandler = Callable[[Any], object]
# (data, (source ip, source port), local address, destination address)
PacketHandler = Callable[[bytes, tuple[str, int], str, str], object]
Received = tuple[bytes, list[tuple[int, int, bytes]], int, Any]  # socket.recvmsg's result


@dataclass(frozen=True, slots=True)
class Interface:
    index: int
    name: str
    up: bool
    multicast: bool
    loopback: bool
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def list_interfaces() -> list[Interface]:
    # Imported here for start-up time: pyroute2 takes ~0.11 s to import, paid in the
    # executor thread that first lists interfaces rather than before the daemon starts.
    from pyroute2 import IPRoute  # noqa: PLC0415

    addrs: dict[int, tuple[list[str], list[str]]] = {}
    with IPRoute() as ipr:
        links = list(ipr.get_links())
        for msg in ipr.get_addr():
            v4, v6 = addrs.setdefault(msg["index"], ([], []))
            address = msg.get_attr("IFA_ADDRESS")
            (v4 if msg["family"] == socket.AF_INET else v6).append(address)
    out = []
    for link in links:
        flags = link["flags"]
        v4, v6 = addrs.get(link["index"], ([], []))
        out.append(Interface(link["index"], link.get_attr("IFLA_IFNAME"), bool(flags & IFF_UP),
                             bool(flags & IFF_MULTICAST), bool(flags & IFF_LOOPBACK),
                             tuple(v4), tuple(v6)))
    return out


def select_interfaces(all_interfaces: Iterable[Interface],
                      wanted: Iterable[str]) -> list[Interface]:
    """Named interfaces if any were asked for (present and up); otherwise every
    multicast-capable interface that is up, loopback excluded."""
    names = list(wanted)
    if names:
        return [i for i in all_interfaces if i.name in names and i.up]
    return [i for i in all_interfaces if i.up and i.multicast and not i.loopback]


class InterfaceWatcher:
    """Calls ``on_change`` in the event loop whenever links or addresses change."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self._loop = loop
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="netlink", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        # Imported here for start-up time, like list_interfaces; this runs in its thread.
        from pyroute2 import IPRoute  # noqa: PLC0415
        from pyroute2.netlink.rtnl import (  # noqa: PLC0415
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_LINK,
        )

        try:
            with IPRoute() as ipr:
                ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
                while not self._stopped.is_set():
                    if list(ipr.get()) and not self._stopped.is_set():
                        self._loop.call_soon_threadsafe(self._on_change)
        except Exception as exc:  # the watcher is best effort; periodic resync remains
            log.warning("netlink watcher stopped", error=str(exc))


def _make_receiver(family: socket.AddressFamily, port: int, bind: str | None = None,
                   pktinfo: bool = False, buffer: int = RECEIVE_BUFFER) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN; bursts of announcements need it
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    # The first SIOCGSTAMP (ENOENT: nothing read yet) has the kernel stamp what arrives
    # from now on; the receive time of each datagram is then there for _waited.
    with contextlib.suppress(OSError):
        fcntl.ioctl(sock.fileno(), SIOCGSTAMP, bytes(16))
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.bind((bind or "::", port))
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((bind or "0.0.0.0", port))
    sock.setblocking(False)
    return sock


def _set_membership(sock: socket.socket, group: IPAddress, ifindex: int, join: bool) -> None:
    if group.version == 4:
        mreqn = group.packed + b"\0\0\0\0" + struct.pack("@i", ifindex)
        opt = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        sock.setsockopt(socket.IPPROTO_IP, opt, mreqn)
    else:
        mreq6 = group.packed + struct.pack("@I", ifindex)
        opt = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
        sock.setsockopt(socket.IPPROTO_IPV6, opt, mreq6)


def packet_info(received: Received) -> tuple[bytes, tuple[str, int], str, str]:
    """A recvmsg result with IP_PKTINFO as (data, (source ip, port), local address,
    destination address): which of our addresses and groups a datagram came in on."""
    data, ancillary, _flags, address = received
    v6 = len(address) == 4
    local = destination = ""
    for level, kind, value in ancillary:
        if not v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            # struct in_pktinfo: ifindex, spec_dst (local), addr (destination)
            local = socket.inet_ntop(socket.AF_INET, value[4:8])
            destination = socket.inet_ntop(socket.AF_INET, value[8:12])
        elif v6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            destination = socket.inet_ntop(socket.AF_INET6, value[:16])
            local = destination
    return data, (address[0], address[1]), local, destination


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on ``sock`` (receive buffer full), 0 if unknown."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, SK_MEMINFO.size)
    except OSError:
        return 0
    if len(info) < SK_MEMINFO.size:  # a kernel before the drop counter was in it
        return 0
    drops: int = SK_MEMINFO.unpack(info)[8]
    return drops


def arrival_of(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, str]:
    """(interface index, destination address) of a datagram from its IP_PKTINFO or
    IPV6_PKTINFO ancillary data; (0, "") without them."""
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            # struct in_pktinfo: ifindex, spec_dst (local), addr (destination)
            return (struct.unpack_from("@i", value)[0],
                    socket.inet_ntop(socket.AF_INET, value[8:12]))
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            # struct in6_pktinfo: addr (destination), ifindex
            return (struct.unpack_from("@I", value, 16)[0],
                    socket.inet_ntop(socket.AF_INET6, value[:16]))
    return 0, ""


def _waited(sock: socket.socket) -> float:
    """Seconds since the kernel received the latest datagram read from ``sock``."""
    try:
        stamp = fcntl.ioctl(sock.fileno(), SIOCGSTAMP, bytes(16))
    except OSError:
        return 0.0
    seconds: int
    microseconds: int
    seconds, microseconds = struct.unpack("@ll", stamp)
    return max(0.0, time.time() - seconds - microseconds / 1e6)  # a stepped clock: 0


def with_packet_info(handler: PacketHandler) -> DatagramHandler:
    """A pktinfo receiver's handler that calls ``handler`` with packet_info's fields."""
    def on_received(received: Received) -> object:
        return handler(*packet_info(received))
    return on_received


class MulticastReceiver:
    """Receives on multicast groups (on a set of interfaces) and on the port's unicast
    address, and hands each datagram's bytes to ``handler``. With ``pktinfo`` the handler
    gets recvmsg's result instead, with IP_PKTINFO telling which local address and
    destination it arrived on (see packet_info, with_packet_info), and :meth:`send`
    answers from the same socket (MADCAP replies)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, groups: Iterable[IPAddress],
                 port: int, handler: DatagramHandler,
                 on_batch_end: Callable[[], None] | None = None, *, pktinfo: bool = False,
                 bind: dict[int, str] | None = None, families: Iterable[int] = (),
                 receive_buffer: int = RECEIVE_BUFFER,
                 drain_budget: float = DRAIN_BUDGET) -> None:
        self._loop = loop
        self.groups = list(groups)
        self.port = port
        self._handler = handler
        self._pktinfo = pktinfo
        self._on_batch_end = on_batch_end
        self._bind = bind or {}
        self._families = set(families)
        self._receive_buffer = receive_buffer
        self._drain_budget = drain_budget
        self._closed_drops = 0  # kernel drops of sockets closed since, summed
        # socket -> how long its latest datagram waited, while its drains end with
        # datagrams left (an emptied socket is not behind)
        self._behind: dict[socket.socket, float] = {}
        # version -> its sockets; the first also sends (see send) and is never closed
        self._sockets: dict[int, list[socket.socket]] = {}
        self._member_of: dict[tuple[str, int], socket.socket] = {}  # membership -> socket
        self.joined: set[tuple[str, int]] = set()
        self.failed_joins: dict[tuple[str, int], str] = {}

    def open(self) -> None:
        families = {g.version for g in self.groups} | self._families
        for version in sorted(families):
            try:
                self._open_socket(version)
            except OSError as exc:
                if version == 6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    log.warning("IPv6 unavailable; listening on IPv4 only", error=str(exc))
                    continue
                raise

    def _open_socket(self, version: int) -> socket.socket:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        sock = _make_receiver(family, self.port, self._bind.get(version), self._pktinfo,
                              self._receive_buffer)
        self._sockets.setdefault(version, []).append(sock)
        receive = (functools.partial(sock.recvmsg, 65535, ANCILLARY) if self._pktinfo
                   else functools.partial(sock.recv, 65535))
        self._loop.add_reader(sock.fileno(), self._drain, sock, receive)
        return sock

    def _close_socket(self, sock: socket.socket) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock.fileno())
        self._closed_drops += socket_drops(sock)
        self._behind.pop(sock, None)
        sock.close()

    @property
    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on our sockets for a full receive buffer."""
        return self._closed_drops + sum(socket_drops(sock) for socks in self._sockets.values()
                                        for sock in socks)

    def queue_delay(self) -> float:
        """Seconds the latest datagram read had waited in the kernel, on the socket
        furthest behind; 0.0 when every socket was emptied by its latest drain."""
        behind = self._behind
        return max(behind.values()) if behind else 0.0

    def close(self) -> None:
        for socks in self._sockets.values():
            for sock in socks:
                self._close_socket(sock)
        self._sockets.clear()
        self._member_of.clear()
        self.joined.clear()

    def _join(self, group: IPAddress, ifindex: int) -> socket.socket:
        """Join on the first socket of the family with room, opening one if none has."""
        socks = self._sockets.get(group.version)
        if not socks:
            raise OSError(errno.EAFNOSUPPORT, "no socket for this address family")
        for sock in socks:
            try:
                _set_membership(sock, group, ifindex, join=True)
                return sock
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:  # already a member on this one
                    return sock
                if exc.errno != errno.ENOBUFS:  # ENOBUFS: this socket is full
                    raise
        if len(socks) >= MAX_SOCKETS:
            raise OSError(errno.ENOBUFS, f"all {MAX_SOCKETS} receiving sockets are full")
        sock = self._open_socket(group.version)
        try:
            _set_membership(sock, group, ifindex, join=True)
        except OSError:  # not even a fresh socket takes it: no more sockets for it
            socks.remove(sock)
            self._close_socket(sock)
            raise
        return sock

    def _leave(self, key: tuple[str, int]) -> None:
        sock = self._member_of.pop(key, None)
        if sock is None:
            return
        group, ifindex = key
        with contextlib.suppress(OSError):  # the interface may be gone already
            _set_membership(sock, ipaddress.ip_address(group), ifindex, join=False)

    def _close_idle_sockets(self) -> None:
        """Extra sockets left without memberships (their interfaces gone) are closed."""
        used = {id(s) for s in self._member_of.values()}
        for socks in self._sockets.values():
            for sock in [s for s in socks[1:] if id(s) not in used]:
                socks.remove(sock)
                self._close_socket(sock)

    @property
    def socket_count(self) -> int:
        return sum(len(socks) for socks in self._sockets.values())

    def set_interfaces(self, interfaces: Iterable[Interface]) -> tuple[int, int]:
        """Join every group on these interfaces and leave the rest; returns (joined, left)."""
        wanted = {(str(g), i.index) for i in interfaces for g in self.groups
                  if g.version == 4 or i.ipv6 or i.loopback}
        joined = left = 0
        for key in sorted(self.joined - wanted):
            self._leave(key)
            self.joined.discard(key)
            left += 1
        for key in [k for k in self.failed_joins if k not in wanted]:
            del self.failed_joins[key]  # no longer wanted, so no longer failing
        for key in sorted(wanted - self.joined):
            group, ifindex = key
            try:
                self._member_of[key] = self._join(ipaddress.ip_address(group), ifindex)
            except OSError as exc:
                self.failed_joins[key] = exc.strerror or str(exc)
                continue
            self.failed_joins.pop(key, None)
            self.joined.add(key)
            joined += 1
        self._close_idle_sockets()
        return joined, left

    def _drain(self, sock: socket.socket, receive: Callable[[], Any]) -> None:
        """Everything waiting, for at most the drain budget, then the batch-end call."""
        handler = self._handler
        clock = time.monotonic
        deadline = clock() + self._drain_budget
        try:
            while True:
                for _ in range(DRAIN_CHECK):
                    handler(receive())
                if clock() >= deadline:
                    self._note_behind(sock)
                    break
        except (BlockingIOError, InterruptedError):
            self._behind.pop(sock, None)
        except OSError as exc:
            log.warning("receive failed", error=str(exc))
        finally:
            if self._on_batch_end is not None:
                self._on_batch_end()

    def _note_behind(self, sock: socket.socket) -> None:
        """After a drain that used its budget: how long its last datagram waited, unless
        that was the last one (no wake-up would come to say it caught up)."""
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            self._behind.pop(sock, None)
            return
        except OSError:
            pass
        self._behind[sock] = _waited(sock)

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """Answer from the receiving socket (unicast replies)."""
        sock = self._sockets[6 if ":" in address[0] else 4][0]
        try:
            sock.sendto(data, address)
        except OSError as exc:
            log.warning("send failed", error=str(exc), to=address[0])


class InterfaceFollower:
    """Keeps a receiver's memberships in step with the chosen interfaces: a netlink
    watcher triggers a debounced resync, and a periodic one catches anything missed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: MulticastReceiver,
                 wanted: Callable[[], list[str]],
                 on_change: Callable[[list[Interface]], None] | None = None) -> None:
        self._loop = loop
        self.receiver = receiver
        self._wanted = wanted
        self._on_change = on_change
        self.names: list[str] = []
        self.chosen: list[Interface] = []
        self.found: list[Interface] = []  # every interface of the host, chosen or not
        self._watcher = InterfaceWatcher(loop, self._changed)
        self._pending: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.resync()
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()
        if self._pending is not None:
            self._pending.cancel()
        for task in self._tasks:
            task.cancel()

    def _changed(self) -> None:
        if self._pending is None:  # debounce bursts of netlink messages
            self._pending = self._loop.call_later(0.2, self._resync_soon)

    def _resync_soon(self) -> None:
        self._pending = None
        task = self._loop.create_task(self.resync())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync(self) -> None:
        try:
            # pyroute2's synchronous API runs its own loop: keep it off ours.
            found = await self._loop.run_in_executor(None, list_interfaces)
        except Exception as exc:
            log.warning("cannot list interfaces", error=str(exc))
            return
        self.found = found
        chosen = select_interfaces(found, self._wanted())
        joined, left = self.receiver.set_interfaces(chosen)
        names = [i.name for i in chosen]
        if joined or left or names != self.names:
            log.info("interfaces", using=names, joined=joined, left=left,
                     failed=len(self.receiver.failed_joins))
        self.names = names
        self.chosen = chosen
        if self._on_change is not None:
            self._on_change(chosen)
