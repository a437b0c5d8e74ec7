"""Stream MADCAP REQUESTs at a server, one new lease id each, and record every ACK.

usage: python -m tests.tools.lease_load HOST PORT OUT [--scope ADDR]

Runs until SIGTERM. Each acknowledged lease is appended to OUT as one JSON line
(``{"lease_id": HEX, "addresses": [...]}``) and flushed before the next request, so a
test that kills the server at any moment knows exactly what was acknowledged.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import signal
import socket
from pathlib import Path

from madcap import wire
from madcap.wire import Message, MsgType


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--scope", default="239.255.0.0")
    args = p.parse_args()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, stop)
    scope = ipaddress.ip_address(args.scope)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    xid = random.getrandbits(31)
    with args.out.open("a") as out:
        while not stopping:
            xid += 1
            lid = b"\0" + os.urandom(16)
            request = Message(msgtype=MsgType.REQUEST, xid=xid, lease_id=lid, scope=scope,
                              lease_time=3600)
            try:
                sock.sendto(wire.encode(request), (args.host, args.port))
                reply = wire.decode(sock.recv(2048))
            except (TimeoutError, ConnectionRefusedError, InterruptedError):
                continue
            if reply.msgtype == MsgType.ACK and reply.lease_id == lid:
                addresses = [str(a) for r in reply.address_ranges or () for a in r.addresses()]
                out.write(json.dumps({"lease_id": lid.hex(), "addresses": addresses}) + "\n")
                out.flush()


if __name__ == "__main__":
    main()
