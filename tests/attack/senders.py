"""Datagrams sent to a sapd from a chosen local IP source (127.0.0.0/8 is all ours on
lo), so a test can play several hosts with one socket each."""

from __future__ import annotations

import socket
import struct


def send_from(source_ip: str, data: bytes, group: str = "239.255.255.255",
              port: int = 9875) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source_ip, 0))
        lo = socket.if_nametoindex("lo")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                        struct.pack("@4s4si", b"\0" * 4, socket.inet_aton(source_ip), lo))
        sock.sendto(data, (group, port))
    finally:
        sock.close()
