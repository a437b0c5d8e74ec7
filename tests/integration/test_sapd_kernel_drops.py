"""Every datagram counted, the kernel's drops too: a sapd that cannot read for a while
(SIGSTOP, as under a flood it cannot keep up with) says in /v1/stats and /metrics how
many datagrams the kernel dropped for its full receive buffer (issue 20: a flood's
234,243 kernel drops were counted nowhere)."""

from __future__ import annotations

import signal
import socket
import struct
import time
from typing import Any

from tests.daemons import Daemon
from tests.packets import announce, sdp_text
from tests.support import wait_for

GROUP, PORT = "224.2.127.254", 9875
SENT = 20_000  # 1.2 kB each: ~24 MB into a 4 MB buffer (8 MB as the kernel counts)


def counted(stats: dict[str, Any]) -> int:
    return sum(stats["packets"].values()) + sum(stats["drops"].values())


def test_datagrams_dropped_by_the_kernel_were_counted_nowhere(sapd: Daemon) -> None:
    packet = announce(sdp_text(name="Known", extra="a=tool:" + "x" * 1100 + "\r\n"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                    struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex("lo")))
    try:
        sock.sendto(packet, (GROUP, PORT))
        wait_for(lambda: sapd.stats()["sessions"] == 1, 10, what="the session known")
        sapd.signal(signal.SIGSTOP)
        try:
            for _ in range(SENT - 2):
                sock.sendto(packet, (GROUP, PORT))
        finally:
            sapd.signal(signal.SIGCONT)

        def drained() -> bool:  # what the buffer held is read: the count stands still
            before = counted(sapd.stats())
            time.sleep(0.1)
            return counted(sapd.stats()) == before > 1
        wait_for(drained, 20, interval=0.1, what="the buffer read")
        sock.sendto(packet, (GROUP, PORT))
        wait_for(lambda: counted(sapd.stats()) == SENT, 20,
                 what=f"{SENT} datagrams counted")
    finally:
        sock.close()
    stats = sapd.stats()
    dropped = stats["drops"]["kernel_receive_buffer"]
    assert dropped > 1000, stats
    assert stats["packets"]["refresh"] + stats["packets"]["new"] + dropped == SENT
    metrics = sapd.client.request("GET", "/metrics").body.decode()
    assert f'sapd_drops_total{{reason="kernel_receive_buffer"}} {dropped}' in metrics
