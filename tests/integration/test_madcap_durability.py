"""madcapd's durability edges (issue 13 item 14): a full disk, a damaged database file,
two daemons on one state directory. Real processes, a real full file system."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from madcap import wire
from madcap.wire import Message, MsgType
from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.support import fill, free_udp_port, small_filesystem, wait_for

SCOPE_ID = wire.ipaddress.IPv4Address("239.255.0.0")
CONFIG = ('[[scope]]\nname = "studio"\nrange = "239.255.0.0/16"\n'
          'pool = "239.255.10.0-239.255.19.255"\n')


def start(workdir: Path, port: int, wait: bool = True) -> Daemon:
    config = workdir.parent / f"{workdir.name}.toml"
    config.write_text(CONFIG)
    daemon = Daemon("madcapd", workdir, ["--listen", f"127.0.0.1:{port}", "--config",
                                         str(config), "--sapd-socket",
                                         str(workdir.parent / "none.sock")])
    return daemon.start(wait=wait)


def request(n: int) -> bytes:
    return wire.encode(Message(msgtype=MsgType.REQUEST, xid=n, lease_id=lease_id(n),
                               scope=SCOPE_ID))


def lease_id(n: int) -> bytes:
    return b"\0" + n.to_bytes(16, "big")


def exchange(port: int, datagrams: list[bytes], wait: float) -> list[Message]:
    """Send each once (no retransmission) and collect what comes back within ``wait``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    for data in datagrams:
        sock.sendto(data, ("127.0.0.1", port))
    got = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(wire.decode(sock.recv(2048)))
        except TimeoutError:
            break
    sock.close()
    return got


def test_after_a_disk_full_period_no_phantom_leases_and_acks_counts_acks_sent(
        tmp_path: Path) -> None:
    port = free_udp_port()
    workdir = tmp_path / "m"
    workdir.mkdir()
    with small_filesystem(workdir / "state", "2m") as state:
        daemon = start(workdir, port)
        try:
            filler = fill(state)
            during = exchange(port, [request(n) for n in range(1, 21)], wait=2.0)
            assert [m for m in during if m.msgtype == MsgType.ACK] == []  # nothing durable
            health = daemon.get("/v1/health")
            assert health["status"] == "degraded" and "disk_full" in health["store"]
            filler.unlink()
            after = exchange(port, [request(n) for n in range(101, 106)], wait=3.0)
            acked = sorted(m.lease_id for m in after if m.msgtype == MsgType.ACK)
            assert acked == [lease_id(n) for n in range(101, 106)]
            stats = daemon.stats()
            assert stats["counters"]["acks"] == 5  # the ACKs sent, not the ones built
            assert stats["store"]["failures"]["disk_full"] >= 1
            assert daemon.get("/v1/health")["status"] == "ok"
            daemon.stop()
            db = sqlite3.connect(state / "leases.sqlite3")
            stored = sorted(bytes(r[0]) for r in db.execute("SELECT lease_id FROM leases"))
            db.close()
            assert stored == acked  # the 20 never acknowledged were never committed
        finally:
            daemon.stop()


def corrupt_index(path: Path, index: str) -> None:
    db = sqlite3.connect(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                         (index,)).fetchone()
    db.close()
    with open(path, "r+b") as out:
        out.seek((root - 1) * page_size)
        out.write(os.urandom(page_size))


def test_corrupt_index_pages_report_degraded_with_a_named_error(tmp_path: Path) -> None:
    port = free_udp_port()
    workdir = tmp_path / "m"
    daemon = start(workdir, port)
    for first in range(1, 301, 50):  # enough leases for an index of several pages
        got = exchange(port, [request(n) for n in range(first, first + 50)], wait=1.0)
        assert len([m for m in got if m.msgtype == MsgType.ACK]) == 50
    daemon.stop()
    path = daemon.state / "leases.sqlite3"
    corrupt_index(path, "leases_hold")
    daemon.start(wait=False)
    try:
        def health() -> Any:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()
            try:
                return daemon.get("/v1/health")
            except (ClientError, OSError):
                return None
        wait_for(health, 10, what="madcapd answering")
        status = daemon.get("/v1/health")
        assert status["status"] == "degraded", status
        assert "corrupt" in status["store"] and str(path) in status["store"]
        exchange(port, [request(n) for n in range(501, 511)], wait=2.0)
        stats = daemon.stats()
        assert stats["store"]["problem"].startswith("corrupt")
        assert any("lease store damaged" in str(e.get("event")) for e in daemon.log_events())
    finally:
        daemon.stop()


def test_a_second_madcapd_on_one_state_directory_refuses_to_start(tmp_path: Path) -> None:
    first = start(tmp_path / "m", free_udp_port())
    try:
        second = Daemon("madcapd", tmp_path / "m2",
                        ["--listen", f"127.0.0.1:{free_udp_port()}", "--state-dir",
                         str(first.state), "--sapd-socket", str(tmp_path / "none.sock")])
        second.start(wait=False)
        assert second.proc is not None
        code = second.proc.wait(30)
        assert code == 1, second.logs()
        assert "in use by another daemon" in second.logs()
        assert first.get("/v1/health")["status"] == "ok"
    finally:
        first.stop()
