"""madcapd on PostgreSQL while the database is down: no ACK (the client's retransmissions
are its retry, RFC 2730 s. 2.3), health degraded and the failures counted; when the
database is back, madcapd reconnects by itself and answers the retransmission."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from pathlib import Path

from madcap import wire
from madcap.wire import Message, MsgType
from tests.daemons import Daemon
from tests.postgres import PostgresDatabase
from tests.support import free_udp_port, script, wait_for


def ask(raw: bytes, port: int, timeout: float) -> Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(raw, ("127.0.0.1", port))
        try:
            return wire.decode(sock.recv(4096))
        except TimeoutError:
            return None


def test_database_down_no_ack_degraded_then_recovered(postgres_database: PostgresDatabase,
                                                      tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "m.toml"
    config.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{postgres_database.dsn}"\n')
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config), "--sapd-socket",
                                                 str(tmp_path / "none.sock")])
    daemon.start(timeout=20)
    try:
        def request(n: int) -> bytes:
            return wire.encode(Message(msgtype=MsgType.REQUEST, xid=n,
                                       lease_id=b"\0" + os.urandom(16),
                                       scope=ipaddress.ip_address("239.255.0.0"),
                                       lease_time=600))
        first = ask(request(1), port, 5)
        assert first is not None and first.msgtype == MsgType.ACK
        postgres_database.server.stop()
        try:
            raw = request(2)
            for _ in range(3):  # the client retransmits: still nothing acknowledged
                assert ask(raw, port, 1.0) is None
            health = daemon.get("/v1/health")
            assert health["status"] == "degraded" and "unavailable" in health["store"]
            metrics = daemon.client.request("GET", "/metrics").body.decode()
            assert "madcap_store_degraded 1" in metrics
            assert 'madcap_store_failures_total{reason="unavailable"}' in metrics
        finally:
            postgres_database.server.start()
        # no restart, no traffic needed: the daemon probes and recovers
        wait_for(lambda: daemon.get("/v1/health")["status"] == "ok", 10,
                 what="health ok again")
        again = ask(raw, port, 5)  # the retransmission, now answered
        assert again is not None and again.msgtype == MsgType.ACK
        stored = postgres_database.sql("SELECT count(*) FROM madcap_leases")
        assert stored == [(2,)]
        assert daemon.stats()["store"]["reconnects"] >= 1
    finally:
        daemon.stop()


def test_database_unreachable_at_start_exits_1_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[store]\nbackend = "postgresql"\n'
                      f'dsn = "host={tmp_path / "nowhere"} dbname=leases"\n')
    done = subprocess.run([script("madcapd"), "--config", str(config), "--state-dir",
                           str(tmp_path / "state"), "--socket", str(tmp_path / "m.sock"),
                           "--listen", f"127.0.0.1:{free_udp_port()}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "unavailable" in done.stderr and "nowhere" in done.stderr
    assert "move it away" not in done.stderr  # a database is not a file to move
