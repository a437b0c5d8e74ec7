"""Send one REQUEST's identical bytes to several MADCAP servers at once, and its
retransmissions to those that have not answered; print what each answered.

usage: python -m tests.tools.madcap_same_request COUNT HOST:PORT HOST:PORT ...

Prints one JSON line per request: ``{"lease_id": HEX, "replies": {SERVER: HEX}}``. Every
server sharing one database must answer a request with the same bytes (RFC 2730's
response cache, across servers).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import select
import socket
import time

from madcap import wire
from madcap.wire import Message, MsgType

RETRANSMISSIONS = 6
WAIT = 0.5  # seconds for the answers before the next retransmission


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("count", type=int)
    p.add_argument("servers", nargs="+")
    args = p.parse_args()
    servers = [(h, int(port)) for h, _, port in (s.rpartition(":") for s in args.servers)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(args.count):
        lid = b"\0" + os.urandom(16)
        raw = wire.encode(Message(msgtype=MsgType.REQUEST, xid=random.getrandbits(31),
                                  lease_id=lid, scope=ipaddress.ip_address("239.255.0.0"),
                                  lease_time=3600))
        replies: dict[str, str] = {}
        for _attempt in range(RETRANSMISSIONS):
            for host, port in servers:
                if f"{host}:{port}" not in replies:
                    sock.sendto(raw, (host, port))
            deadline = time.monotonic() + WAIT
            while len(replies) < len(servers) and time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], deadline - time.monotonic())
                if ready:
                    data, (host, port) = sock.recvfrom(4096)
                    replies[f"{host}:{port}"] = data.hex()
            if len(replies) == len(servers):
                break
        print(json.dumps({"lease_id": lid.hex(), "replies": replies}), flush=True)


if __name__ == "__main__":
    main()
