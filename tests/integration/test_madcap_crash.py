"""SIGKILL madcapd in the middle of a stream of requests: after each restart every lease
acknowledged before the kill is still held by its client, and no address is held twice."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import threading
import time
from pathlib import Path

from madcap import wire
from madcap.wire import Message, MsgType
from tests.daemons import Daemon
from tests.support import free_udp_port

SCOPE = ipaddress.IPv4Address("239.255.0.0")


class Requester(threading.Thread):
    """Streams unicast REQUESTs, one lease id each, and records every ACK."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: dict[bytes, tuple[str, ...]] = {}
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.2)
        xid = random.getrandbits(31)
        while not self.stop.is_set():
            xid += 1
            lid = b"\0" + os.urandom(16)
            sock.sendto(wire.encode(Message(msgtype=MsgType.REQUEST, xid=xid, lease_id=lid,
                                            scope=SCOPE, lease_time=3600)),
                        ("127.0.0.1", self.port))
            self.sent += 1
            try:
                reply = wire.decode(sock.recv(2048))
            except (TimeoutError, ConnectionRefusedError):
                continue
            if reply.msgtype == MsgType.ACK and reply.lease_id == lid:
                self.acked[lid] = tuple(str(a) for r in reply.address_ranges or ()
                                        for a in r.addresses())


def check(daemon: Daemon, acked: dict[bytes, tuple[str, ...]]) -> int:
    leases = daemon.get("/v1/leases")["leases"]
    held = {bytes.fromhex(le["lease_id"]): tuple(le["addresses"]) for le in leases}
    for lid, addresses in acked.items():
        assert held.get(lid) == addresses, f"acknowledged lease {lid.hex()} lost or changed"
    every = [a for addresses in held.values() for a in addresses]
    assert len(every) == len(set(every)), "an address is leased twice"
    return len(held)


def test_sigkill_during_requests_loses_nothing(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "m.toml"
    config.write_text('[[scope]]\nname = "crash"\nrange = "239.255.0.0/16"\n'
                      'pool = "239.255.0.0-239.255.199.255"\n')
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config)])
    rng = random.Random(5)
    acked: dict[bytes, tuple[str, ...]] = {}
    rounds = 5
    for _ in range(rounds):
        daemon.start()
        check(daemon, acked)
        requester = Requester(port)
        requester.start()
        time.sleep(rng.uniform(0.2, 1.0))
        daemon.kill()  # at a random moment, requests in flight
        requester.stop.set()
        requester.join(5)
        assert requester.acked, (f"no ACK before the kill ({requester.sent} sent):\n"
                                 f"{daemon.logs()[-2000:]}")
        acked.update(requester.acked)
    daemon.start()
    try:
        total = check(daemon, acked)
        assert total >= len(acked)
    finally:
        daemon.stop()
