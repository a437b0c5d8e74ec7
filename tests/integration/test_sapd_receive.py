"""sapd as a running process on loopback multicast: what a user sees over the socket."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket as socketlib
import stat
import time
import zlib
from pathlib import Path
from typing import Any

from sapd import wire
from sapd.plumbing.client import ClientError
from sapd.scopes import ScopeTable
from tests.daemons import Daemon, collect_events, send_local_multicast, wait_session
from tests.packets import announce, delete, sdp_text
from tests.support import ROOT, run, script, wait_for


def test_announcement_appears_with_its_fields(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(name="Studio A", group="239.255.3.4")),
                         "239.255.255.255")
    (s,) = wait_session(sapd, lambda s: s["name"] == "Studio A")
    assert s["groups"] == ["239.255.3.4"] and s["media"] == ["audio"]
    assert s["scope"] == "ipv4-local" and not s["stale"]
    # the sender is what the kernel says (which local address it gives multicast sent on
    # lo depends on the host's other interfaces); what the SAP header claims is kept beside
    assert s["source"] != "10.0.0.1" and s["header_source"] == "10.0.0.1"
    assert s["heard_via"] == [{"via": "sap", "group": "239.255.255.255", "interface": "lo",
                               "source": s["source"]}]
    detail = sapd.get(f"/v1/sessions/{s['id']}?detail=full")
    assert detail["parsed"]["name"] == "Studio A"
    raw = sapd.client.request("GET", f"/v1/sessions/{s['id']}",
                              headers={"Accept": "application/sdp"})
    assert raw.content_type.startswith("application/sdp") and b"s=Studio A" in raw.body


def test_all_standard_groups_are_heard(sapd: Daemon) -> None:
    for i, group in enumerate(["224.2.127.254", "239.255.255.255", "239.195.255.255"]):
        send_local_multicast(announce(sdp_text(session=i, name=f"g{i}")), group)
    # IPv6 has no multicast route over lo; the namespace tests cover ff0X::2:7ffe.
    wait_for(lambda: len(sapd.sessions()) == 3, 5, what="3 sessions")
    stats = sapd.stats()
    assert len(stats["memberships"]) == len(ScopeTable().sap_groups()), stats["failed_joins"]


def test_version_replacement_and_deletion(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(version=1, name="old")))
    wait_session(sapd, lambda s: s["name"] == "old")
    send_local_multicast(announce(sdp_text(version=2, name="new")))
    wait_session(sapd, lambda s: s["name"] == "new")
    assert [s["name"] for s in sapd.sessions()] == ["new"]  # replaced, not beside
    send_local_multicast(delete(version=2, source="10.9.9.9"))  # wrong source: ignored
    send_local_multicast(delete(version=1))  # deletes the replaced version only: ignored
    send_local_multicast(delete(version=2))
    wait_for(lambda: sapd.sessions() == [], 3, what="deletion")
    stats = sapd.stats()
    assert stats["packets"]["deleted"] == 1 and stats["drops"]["unknown_deletion"] == 1
    assert stats["drops"]["stale_deletion"] == 1


def test_expiry_with_short_profile(sapd_factory: Any) -> None:
    daemon = sapd_factory(config="expiry_floor = 1.0\ndefault_period = 0.1\n").start()
    send_local_multicast(announce(sdp_text(name="short")))
    wait_session(daemon, lambda s: s["name"] == "short")
    wait_for(lambda: daemon.sessions() == [], 5, what="expiry")
    assert daemon.stats()["expired"] == 1


def test_session_cap_keeps_existing(sapd_factory: Any) -> None:
    daemon = sapd_factory(config="[limits]\nmax_sessions = 2\n").start()
    for i in range(4):
        send_local_multicast(announce(sdp_text(session=i, name=f"s{i}")))
    wait_for(lambda: daemon.stats()["drops"].get("session_cap") == 2, 5, what="cap drops")
    # the store process commits a moment after the engine counted
    wait_for(lambda: len(daemon.sessions()) == 2, 2, what="the two admitted sessions listed")
    time.sleep(0.2)
    assert len(daemon.sessions()) == 2


MALFORMED: dict[str, bytes] = {
    "truncated": b"\x20\x00",
    "bad_version": b"\x60\x00\x00\x01\x0a\x00\x00\x01" + sdp_text().encode(),
    "auth_overrun": b"\x20\x40\x00\x01\x0a\x00\x00\x01abcd",
    "bad_auth_header": b"\x20\x01\x00\x01\x0a\x00\x00\x01\x30\x00\x00\x09v=0\n",
    "inflate_failed": b"\x21\x00\x00\x01\x0a\x00\x00\x01not-zlib",
    "inflate_too_large": b"\x21\x00\x00\x01\x0a\x00\x00\x01"
                         + zlib.compress(b"v=0\n" + b"a=x\n" * 20000),
    "bad_payload_type": b"\x20\x00\x00\x01\x0a\x00\x00\x01garbage-without-nul",
    "empty_payload": b"\x20\x00\x00\x01\x0a\x00\x00\x01application/sdp\x00",
    "zero_hash": announce(sdp_text(session=77), msg_hash=0),
    "encrypted": b"\x22\x00\x00\x05\x0a\x00\x00\x01secret",
    "not_sdp": b"\x20\x00\x00\x05\x0a\x00\x00\x01text/plain\x00hello",
    "invalid_sdp": announce("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nt=0 0\r\n", msg_hash=99),
    "unknown_deletion": delete(session=555),
    "bad_deletion": announce("o=garbage", deletion=True),
}


def test_malformed_packets_counted_directory_unchanged(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(name="keeper")))
    (before,) = wait_session(sapd, lambda s: s["name"] == "keeper")
    for data in MALFORMED.values():
        send_local_multicast(data)
    wait_for(lambda: sum(sapd.stats()["drops"].values()) >= len(MALFORMED), 5,
             what="all drops counted")
    drops = sapd.stats()["drops"]
    assert {k: drops.get(k) for k in MALFORMED} == dict.fromkeys(MALFORMED, 1)
    assert sapd.get("/v1/health")["status"] == "ok"
    (after,) = sapd.sessions()
    assert after["id"] == before["id"] and after["version"] == before["version"]
    metrics = sapd.client.request("GET", "/metrics").body.decode()
    assert 'sapd_drops_total{reason="bad_version"} 1' in metrics


def test_restart_and_sigkill_keep_directory_stale_until_heard(sapd_factory: Any) -> None:
    daemon = sapd_factory().start()
    for i in range(3):
        send_local_multicast(announce(sdp_text(session=i, name=f"kept{i}")))
    wait_for(lambda: len(daemon.sessions()) == 3, 5, what="3 sessions")
    time.sleep(0.2)  # let the batch commit: one drain, one transaction
    daemon.kill()
    daemon.start()
    sessions = daemon.sessions()
    assert sorted(s["name"] for s in sessions) == ["kept0", "kept1", "kept2"]
    assert all(s["stale"] for s in sessions)
    send_local_multicast(announce(sdp_text(session=1, name="kept1")))
    wait_for(lambda: daemon.sessions("?stale=false") != [], 5, what="heard again")
    assert [s["name"] for s in daemon.sessions("?stale=false")] == ["kept1"]
    assert daemon.stop() == 0
    daemon.start()
    assert len(daemon.sessions()) == 3


def test_stale_sessions_still_expire_after_restart(sapd_factory: Any) -> None:
    daemon = sapd_factory(config="expiry_floor = 1.5\ndefault_period = 0.1\n").start()
    send_local_multicast(announce(sdp_text(name="fading")))
    wait_session(daemon, lambda s: s["name"] == "fading")
    daemon.kill()
    daemon.start()
    wait_for(lambda: daemon.sessions() == [], 5, what="stale expiry")


def test_event_stream_sees_new_and_deleted(sapd: Daemon) -> None:
    thread, lines = collect_events(sapd, 2)
    send_local_multicast(announce(sdp_text(name="evt")))
    wait_session(sapd, lambda s: s["name"] == "evt")
    send_local_multicast(delete())
    thread.join(5)
    assert [e["event"] for e in lines] == ["new", "deleted"]
    assert lines[0]["session"]["name"] == "evt"


def test_sse_format_by_default(sapd: Daemon) -> None:
    sock = socketlib.socket(socketlib.AF_UNIX)
    sock.connect(str(sapd.socket))
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    head = sock.recv(4096)
    wait_for(lambda: sapd.stats()["subscribers"] == 1, 5, what="subscriber")
    send_local_multicast(announce(sdp_text(name="sse")))
    data = head
    while b"event: new" not in data:
        data += sock.recv(4096)
    assert b"text/event-stream" in head
    sock.close()


def test_api_errors_are_actionable_json(sapd: Daemon) -> None:
    for path, status, words in [("/v1/sessions/nope", 404, "no session"),
                                ("/v1/sessions?limit=abc", 400, "limit"),
                                ("/v1/sessions?colour=red", 400, "unknown query"),
                                ("/v1/nothing", 404, "Not Found")]:
        try:
            sapd.client.request("GET", path)
        except ClientError as exc:
            assert exc.status == status and words in str(exc), (path, exc)
        else:
            raise AssertionError(f"{path} should fail")


def test_socket_mode_and_stale_socket_replaced(sapd_factory: Any) -> None:
    daemon = sapd_factory().start()
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660
    assert daemon.get("/v1/whoami")["uid"] == os.getuid()
    daemon.kill()
    assert daemon.socket.exists()  # left behind by the crash
    daemon.start()
    assert daemon.get("/v1/health")["status"] == "ok"
    second = Daemon("sapd", daemon.workdir / "second", ["--interface", "lo"])
    second.socket = daemon.socket
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(10) == 1
    assert "in use" in second.logs()


def test_config_error_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_sessions = 'many'\n")
    result = run(script("sapd"), "--config", str(bad))
    assert result.returncode == 2 and "limits.max_sessions" in result.stderr
    bad.write_text("profil = 'rfc'\n")
    result = run(script("sapd"), "--config", str(bad))
    assert result.returncode == 2 and "profil: unknown key" in result.stderr


def test_sapctl_list_show_stats_against_daemon(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(name="cli session")))
    (s,) = wait_session(sapd, lambda s: s["name"] == "cli session")
    sock = str(sapd.socket)
    listed = run(script("sapctl"), "--socket", sock, "list")
    assert listed.returncode == 0 and "cli session" in listed.stdout and s["id"] in listed.stdout
    as_json = json.loads(run(script("sapctl"), "--socket", sock, "list", "--json").stdout)
    assert as_json["total"] == 1
    shown = run(script("sapctl"), "--socket", sock, "show", s["id"])
    assert "s=cli session" in shown.stdout
    assert "header_source:   10.0.0.1" in shown.stdout  # what the header claims, beside
    assert f"heard via:       sap 224.2.127.254 on lo from {s['source']}" in shown.stdout
    stats = run(script("sapctl"), "--socket", sock, "stats")
    assert "sessions: 1" in stats.stdout and "store:    backlog 0   restarts 0" in stats.stdout
    missing = run(script("sapctl"), "--socket", sock, "show", "nope")
    assert missing.returncode == 1 and "no session" in missing.stderr


def test_sighup_reloads_profile(sapd_factory: Any, tmp_path: Path) -> None:
    daemon = sapd_factory(config="profile = 'aes67'\n").start()
    (tmp_path / "a.toml").write_text("profile = 'rfc'\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.stats()["profile"] == "rfc", 5, what="reload")


def test_compressed_announcement_accepted(sapd: Daemon) -> None:
    payload = sdp_text(name="zipped").encode()
    packet = wire.encode(wire.SapPacket(wire.content_hash(payload),
                                        ipaddress.IPv4Address("10.0.0.5"), payload),
                         compress=True)
    send_local_multicast(packet)
    wait_session(sapd, lambda s: s["name"] == "zipped")


def test_vectors_dir_exists() -> None:
    assert (ROOT / "tests" / "vectors" / "ffmpeg-announce.sap").exists()
