"""madcapctl against a running madcapd over UDP on loopback, as a user runs them."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from madcap import wire
from madcap.wire import Message, MsgType
from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.support import free_udp_port, run, script, wait_for

SCOPE = """
[[scope]]
name = "studio"
range = "239.255.0.0/16"
pool = "239.255.10.1-239.255.10.4"
lease_default = 600
lease_min = 1
names = [{language = "en", name = "Studio A"}, {language = "de", name = "Studio A (de)"}]
"""


@pytest.fixture
def madcapd(tmp_path: Path) -> Any:
    port = free_udp_port()
    config = tmp_path / "madcapd.toml"
    config.write_text("guard = 5.0\n" + SCOPE)  # top level: after [[scope]] it is a scope key
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config),
                                                 "--sapd-socket", str(tmp_path / "none.sock")])
    daemon.port = port  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    daemon.stop()


def ctl(daemon: Any, tmp_path: Path, *args: str) -> Any:
    result = run(script("madcapctl"), "--server", f"127.0.0.1:{daemon.port}",
                 "--socket", str(daemon.socket), "--lease-file", str(tmp_path / "leases.json"),
                 "--timeout", "8", *args)
    return result


def test_scopes_request_renew_release_leases(madcapd: Any, tmp_path: Path) -> None:
    scopes = ctl(madcapd, tmp_path, "scopes", "--json")
    assert scopes.returncode == 0, scopes.stderr
    (scope,) = json.loads(scopes.stdout)
    assert scope["name"] == "Studio A" and scope["scope_id"] == "239.255.0.0"
    got = ctl(madcapd, tmp_path, "request", "--count", "2", "--json")
    assert got.returncode == 0, got.stderr
    lease = json.loads(got.stdout)
    assert sorted(lease["addresses"]) == ["239.255.10.1", "239.255.10.2"]
    listed = ctl(madcapd, tmp_path, "leases", "--json")
    (row,) = json.loads(listed.stdout)["leases"]
    assert row["lease_id"] == lease["lease_id"] and row["state"] == "active"
    table = ctl(madcapd, tmp_path, "leases")
    assert "239.255.10.1,239.255.10.2" in table.stdout and "2 leased" in table.stdout
    renewed = ctl(madcapd, tmp_path, "renew", lease["lease_id"][:8], "--lease", "120",
                  "--json")
    assert renewed.returncode == 0, renewed.stderr
    assert json.loads(renewed.stdout)["end"] == pytest.approx(time.time() + 120, abs=5)
    released = ctl(madcapd, tmp_path, "release", lease["lease_id"][:8])
    assert released.returncode == 0 and "released 239.255.10.1" in released.stdout
    assert json.loads(ctl(madcapd, tmp_path, "leases", "--json").stdout)["leases"] == []
    held = json.loads(ctl(madcapd, tmp_path, "leases", "--all", "--json").stdout)["leases"]
    assert [h["state"] for h in held] == ["released"]


def test_exhaustion_is_reported(madcapd: Any, tmp_path: Path) -> None:
    assert ctl(madcapd, tmp_path, "request", "--count", "4").returncode == 0
    refused = ctl(madcapd, tmp_path, "request")
    assert refused.returncode == 1
    assert "server refused: could not complete" in refused.stderr


def test_unknown_lease_and_stats(madcapd: Any, tmp_path: Path) -> None:
    result = ctl(madcapd, tmp_path, "release", "00" + "ab" * 16)
    assert result.returncode == 1 and "lease id not recognized" in result.stderr
    stats = madcapd.get("/v1/stats")
    assert stats["counters"]["bad_lease_ids"] == 1
    assert stats["sapd"].startswith("unavailable")
    metrics = madcapd.client.request("GET", "/metrics").body.decode()
    assert 'madcap_messages_total{kind="releases"} 1' in metrics


def test_retransmitted_request_gets_the_same_bytes(madcapd: Any) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    msg = wire.encode(Message(msgtype=MsgType.REQUEST, xid=1234, lease_id=b"\0" + os.urandom(16),
                              scope=wire.ipaddress.IPv4Address("239.255.0.0")))
    replies = []
    for _ in range(3):
        sock.sendto(msg, ("127.0.0.1", madcapd.port))
        replies.append(sock.recv(2048))
    assert replies[0] == replies[1] == replies[2]
    assert len(madcapd.get("/v1/leases")["leases"]) == 1
    assert madcapd.get("/v1/stats")["counters"]["retransmissions"] == 2


def test_revoke_through_the_socket(madcapd: Any, tmp_path: Path) -> None:
    lease = json.loads(ctl(madcapd, tmp_path, "request", "--json").stdout)
    result = madcapd.client.request("DELETE", f"/v1/leases/{lease['lease_id']}")
    assert json.loads(result.body)["revoked"]["state"] == "revoked"
    renew = ctl(madcapd, tmp_path, "renew", lease["lease_id"])
    assert renew.returncode == 1


def test_hold_renews_then_releases(madcapd: Any, tmp_path: Path) -> None:
    proc = subprocess.Popen([script("madcapctl"), "--server", f"127.0.0.1:{madcapd.port}",
                             "--lease-file", str(tmp_path / "l.json"), "hold", "--lease", "4"],
                            stdout=subprocess.PIPE, text=True)
    wait_for(lambda: madcapd.get("/v1/stats")["counters"].get("renews", 0) >= 1, 10,
             what="a renewal")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "holding 239.255.10.1" in out and "released" in out
    assert madcapd.get("/v1/leases")["leases"] == []


def test_default_scope_without_configuration(tmp_path: Path) -> None:
    port = free_udp_port()
    daemon = Daemon("madcapd", tmp_path / "d", ["--listen", f"127.0.0.1:{port}"]).start()
    try:
        (scope,) = daemon.get("/v1/scopes")["scopes"]
        assert scope["range"] == "239.255.0.0-239.255.255.255"
        assert scope["pool"] == "239.255.0.0-239.255.254.255"  # never the relative block
    finally:
        daemon.stop()


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[scope]]\nname = "x"\nrange = "224.2.0.0/16"\n')
    result = run(script("madcapd"), "--config", str(bad))
    assert result.returncode == 2 and "scope[0].pool" in result.stderr
    assert "RFC 5771" in result.stderr


def test_one_host_took_the_whole_pool_whatever_its_ports_and_lease_ids(tmp_path: Path) -> None:
    """Issue 13 item 12 over real sockets: the quota follows the datagram's source
    address (127.0.0.2 on new ports and lease ids each time), not anything it writes."""
    port = free_udp_port()
    config = tmp_path / "madcapd.toml"
    config.write_text(SCOPE + "max_addresses_per_client = 2\n")
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config),
                                                 "--sapd-socket", str(tmp_path / "none.sock")])
    daemon.start()

    def request_from(host: str) -> Message:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            sock.settimeout(3)
            sock.sendto(wire.encode(Message(
                msgtype=MsgType.REQUEST, xid=int.from_bytes(os.urandom(4), "big"),
                lease_id=b"\0" + os.urandom(16),
                scope=wire.ipaddress.IPv4Address("239.255.0.0"))), ("127.0.0.1", port))
            return wire.decode(sock.recv(2048))
    try:
        answers = [request_from("127.0.0.2").msgtype for _ in range(3)]
        assert answers == [MsgType.ACK, MsgType.ACK, MsgType.NAK]
        assert request_from("127.0.0.3").msgtype == MsgType.ACK
        stats = daemon.get("/v1/stats")
        assert stats["counters"]["client_address_quota"] == 1
        (scope,) = stats["scopes"]
        assert scope["counters"]["client_address_quota"] == 1
        assert scope["max_addresses_per_client"] == 2
        metrics = daemon.client.request("GET", "/metrics").body.decode()
        assert 'madcap_refusals_total{reason="client_address_quota"} 1' in metrics
    finally:
        daemon.stop()


def test_leases_listing_is_paged_and_madcapctl_reads_every_page(madcapd: Any,
                                                                 tmp_path: Path) -> None:
    for _ in range(3):
        assert ctl(madcapd, tmp_path, "request").returncode == 0
    page = madcapd.get("/v1/leases?limit=2")
    assert (len(page["leases"]), page["total"], page["limit"], page["offset"]) == (2, 3, 2, 0)
    rest = madcapd.get("/v1/leases?limit=2&offset=2")
    assert len(rest["leases"]) == 1
    assert {le["lease_id"] for le in page["leases"] + rest["leases"]} == \
        {le["lease_id"] for le in madcapd.get("/v1/leases")["leases"]}
    listed = ctl(madcapd, tmp_path, "leases", "--page-size", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["leases"]) == 3
    table = ctl(madcapd, tmp_path, "leases", "--page-size", "1")
    assert table.stdout.count(" active ") == 3, table.stdout
    with pytest.raises(ClientError, match=r"limit='1001': expected an integer in 1\.\.1000"):
        madcapd.get("/v1/leases?limit=1001")


class _GroupsHandler(http.server.BaseHTTPRequestHandler):
    answer: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_groups_and_ranges_sapd_lists_are_not_leased(tmp_path: Path) -> None:
    """What madcapd reads from sapd's socket: ``groups``, and ``ranges`` if present."""
    sock = tmp_path / "sapd.sock"
    _GroupsHandler.answer = json.dumps({
        "groups": ["239.255.10.1", "not an address"],
        "ranges": [{"first": "239.255.10.2", "count": 2}]}).encode()
    sapd = socketserver.UnixStreamServer(str(sock), _GroupsHandler)
    threading.Thread(target=sapd.serve_forever, daemon=True).start()
    port = free_udp_port()
    config = tmp_path / "madcapd.toml"
    config.write_text("guard = 5.0\n" + SCOPE)
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config),
                                                 "--sapd-socket", str(sock)])
    daemon.port = port  # type: ignore[attr-defined]
    daemon.start()
    try:
        wait_for(lambda: daemon.get("/v1/stats")["sapd"].startswith("connected"), 10,
                 what="madcapd read sapd's groups")
        assert daemon.get("/v1/stats")["sapd_groups_unparsed"] == 1
        got = ctl(daemon, tmp_path, "request", "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["addresses"] == ["239.255.10.4"]
        assert ctl(daemon, tmp_path, "request").returncode == 1  # the rest are in use
    finally:
        daemon.stop()
        sapd.shutdown()
        sapd.server_close()
    assert any(e.get("event", "").startswith("sapd listed groups that are not")
               for e in daemon.log_events())
