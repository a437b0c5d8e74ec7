"""Two madcapd on one PostgreSQL, one on a host whose clock is 10 minutes slow
(libfaketime, for that madcapd alone): lease times come from the database's clock, so
the slow one grants leases that start now, refuses no client for clock skew, and the
two agree on what is held (shared/notes/many-hosts.md 5.3, S3)."""

from __future__ import annotations

import glob
import ipaddress
import os
import socket
import time
from pathlib import Path

from madcap import wire
from madcap.wire import Message, MsgType
from tests.daemons import Daemon
from tests.postgres import PostgresDatabase
from tests.support import free_udp_port, missing

SKEW = 600.0


def ask(msg: Message, port: int) -> Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(wire.encode(msg), ("127.0.0.1", port))
        try:
            return wire.decode(sock.recv(4096))
        except TimeoutError:
            return None


def test_a_server_with_a_slow_clock_keeps_the_databases_time(
        postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    preload = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not preload:
        missing("needs libfaketime (apt-get install faketime)")
    config = tmp_path / "m.toml"
    # a tight skew allowance: a server on its own slow clock would NAK every client
    config.write_text(f'clock_skew = 60.0\n[store]\nbackend = "postgresql"\n'
                      f'dsn = "{postgres_database.dsn}"\n')
    ports = [free_udp_port(), free_udp_port()]
    servers = [Daemon("madcapd", tmp_path / f"m{i}",
                      ["--listen", f"127.0.0.1:{port}", "--config", str(config),
                       "--sapd-socket", str(tmp_path / "none.sock")],
                      env={"LD_PRELOAD": preload[0], "FAKETIME": f"-{int(SKEW)}",
                           "FAKETIME_DONT_FAKE_MONOTONIC": "1"} if i else None)
               for i, port in enumerate(ports)]
    for server in servers:
        server.start(timeout=20)
    try:
        granted = []
        for n, port in enumerate(ports * 3):
            reply = ask(Message(msgtype=MsgType.REQUEST, xid=n + 1,
                                lease_id=b"\0" + os.urandom(16),
                                scope=ipaddress.ip_address("239.255.0.0"),
                                current_time=int(time.time()), lease_time=600), port)
            assert reply is not None and reply.msgtype == MsgType.ACK, (port, reply)
            granted.append(reply)
        rows = postgres_database.sql(
            "SELECT start, extract(epoch FROM now())::float8 FROM madcap_leases")
        assert len(rows) == 6
        for start, db_now in rows:
            assert abs(float(start) - float(db_now)) < 30, rows  # not 600 s off
        every = [str(a) for r in granted for rg in r.address_ranges or ()
                 for a in rg.addresses()]
        assert len(every) == len(set(every))
        usage = [s.get("/v1/scopes")["scopes"][0]["leased"] for s in servers]
        assert usage == [6, 6]
    finally:
        for server in servers:
            server.stop()
