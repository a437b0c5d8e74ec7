"""Send datagrams from files to a (multicast) address: a tiny peer for tests.

usage: python -m tests.tools.udpsend GROUP PORT FILE... [--iface NAME] [--ttl N]
       [--repeat N] [--interval S]
"""

from __future__ import annotations

import argparse
import socket
import struct
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("group")
    p.add_argument("port", type=int)
    p.add_argument("files", nargs="+")
    p.add_argument("--iface")
    p.add_argument("--ttl", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0)
    args = p.parse_args()
    v6 = ":" in args.group
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    ifindex = socket.if_nametoindex(args.iface) if args.iface else 0
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, args.ttl)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        target: tuple[object, ...] = (args.group, args.port, 0, ifindex)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, args.ttl)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, ifindex))
        target = (args.group, args.port)
    payloads = [Path(f).read_bytes() for f in args.files]
    for i in range(args.repeat):
        for data in payloads:
            sock.sendto(data, target)
        if args.interval and i + 1 < args.repeat:
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
