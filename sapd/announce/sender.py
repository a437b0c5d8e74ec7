"""The announce service's way out: SAP packets to a group, out of one interface."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Sender(Protocol):
    def send(self, data: bytes, group: IPAddress, port: int, ifindex: int, ttl: int,
             source: str | None = None) -> None: ...
    def close(self) -> None: ...


class MulticastSender:
    """Sends SAP packets to a group out of one interface with a given TTL."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[int, int, int, str | None], socket.socket] = {}

    def _socket(self, version: int, ifindex: int, ttl: int,
                source: str | None) -> socket.socket:
        key = (version, ifindex, ttl, source)
        sock = self._sockets.get(key)
        if sock is not None:
            return sock
        if version == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            mreqn = b"\0\0\0\0" + (ipaddress.IPv4Address(source).packed if source
                                   else b"\0\0\0\0") + struct.pack("@i", ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            if source:
                sock.bind((source, 0))
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            if source:
                sock.bind((source, 0, 0, ifindex))
        sock.setblocking(False)
        self._sockets[key] = sock
        return sock

    def send(self, data: bytes, group: IPAddress, port: int, ifindex: int, ttl: int,
             source: str | None = None) -> None:
        sock = self._socket(group.version, ifindex, ttl, source)
        if group.version == 4:
            sock.sendto(data, (str(group), port))
        else:
            sock.sendto(data, (str(group), port, 0, ifindex))

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
