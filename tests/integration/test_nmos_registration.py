"""sapd registering the directory with an IS-04 registry: the test double (a real aiohttp
server in a process of its own, validating every body against the v1.3 schemas and the
registration rules) and sapd as real processes, SAP over lo. Run it in a network
namespace of your own (multicast on lo is heard by everyone in the namespace)."""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, send_local_multicast
from tests.nmos_registry import RegistryProcess
from tests.packets import announce, delete, sdp_text
from tests.support import free_tcp_port, run, script, wait_for

SAP_GROUP = "239.255.255.255"
LIMITS = "[limits]\nsource_rate = 100000.0\nsource_burst = 100000.0\n"


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    process = RegistryProcess(free_tcp_port()).start()
    yield process
    process.kill()


def config(registry_url: str, web_port: int) -> str:
    return (f'{LIMITS}[web]\nlisten = "127.0.0.1:{web_port}"\n'
            f'[nmos]\nregistry = "{registry_url}"\n')


def sender_of(state: dict[str, Any], session_id: str) -> dict[str, Any] | None:
    for data in state["resources"]["sender"].values():
        if data["tags"].get("urn:x-sapd:session") == [session_id]:
            return dict(data)
    return None


def announce_many(count: int, start: int = 0, version: int = 1) -> None:
    for n in range(start, start + count):
        text = sdp_text(session=n, version=version, name=f"stream {n}",
                        group=f"239.69.{n // 250}.{n % 250 + 1}",
                        origin=f"10.0.{n % 10}.1")
        send_local_multicast(announce(text, source="127.0.0.1"), SAP_GROUP)


def senders(registry: RegistryProcess) -> int:
    return registry.counts()["sender"]


def sessions(daemon: Daemon) -> int:
    return int(daemon.stats()["sessions"])


def test_thousand_sessions_registered_within_10s_deleted_in_6s_changed_bump_version(
        sapd_factory: Any, registry: RegistryProcess) -> None:
    web = free_tcp_port()
    daemon: Daemon = sapd_factory(config=config(registry.url, web)).start()
    started = time.monotonic()
    announce_many(1000)
    wait_for(lambda: sessions(daemon) == 1000, 10, interval=0.1, what="1,000 sessions heard")
    heard = time.monotonic()
    wait_for(lambda: senders(registry) == 1000, 10, interval=0.2,
             what="1,000 senders registered")
    registered = time.monotonic()
    state = registry.state()
    assert not state["violations"], state["violations"][:5]
    assert len(state["resources"]["node"]) == 1 and len(state["resources"]["device"]) == 10
    assert len(state["resources"]["flow"]) == len(state["resources"]["source"]) == 1000
    print(f"\n1,000 heard in {heard - started:.2f} s, registered "
          f"{registered - heard:.2f} s later")

    session = next(s for s in daemon.all_sessions() if s["name"] == "stream 7")
    before = sender_of(state, session["id"])
    assert before is not None
    assert before["manifest_href"] == f"http://127.0.0.1:{web}/v1/sessions/{session['id']}.sdp"
    with urllib.request.urlopen(before["manifest_href"], timeout=5) as answer:
        assert b"s=stream 7" in answer.read()

    text = sdp_text(session=7, version=2, name="stream 7 renamed", group="239.69.0.8",
                    origin="10.0.7.1")
    send_local_multicast(announce(text, source="127.0.0.1"), SAP_GROUP)

    def bumped() -> bool:
        after = registry.resource("sender", before["id"])
        return after is not None and after["label"] == "stream 7 renamed"
    wait_for(bumped, 6, interval=0.1, what="the changed sender re-registered")
    after = registry.resource("sender", before["id"])
    assert after is not None
    version = tuple(int(x) for x in after["version"].split(":"))
    assert version > tuple(int(x) for x in before["version"].split(":"))

    gone = next(s for s in daemon.all_sessions() if s["name"] == "stream 8")
    gone_sender = sender_of(state, gone["id"])
    assert gone_sender is not None
    sent = time.monotonic()
    send_local_multicast(delete(session=8, origin="10.0.8.1", source="127.0.0.1"),
                         SAP_GROUP)
    wait_for(lambda: registry.resource("sender", gone_sender["id"]) is None, 6, interval=0.1,
             what="the deleted session's sender gone")
    print(f"deleted session gone from the registry in {time.monotonic() - sent:.2f} s")
    state = registry.state()
    assert not state["violations"], state["violations"][:5]
    assert len(state["resources"]["flow"]) == 999

    stats = daemon.stats()["nmos"]
    assert stats["registered"]["sender"] == 999 and stats["state"] == "registered"
    metrics = daemon.client.request("GET", "/metrics").body.decode()
    assert 'sapd_nmos_registered{type="sender"} 999' in metrics
    assert "sapd_nmos_up 1" in metrics

    node_api = f"http://127.0.0.1:{web}/x-nmos/node/v1.3"
    with urllib.request.urlopen(node_api + "/senders/", timeout=5) as answer:
        assert len(json.loads(answer.read())) == 999
    with urllib.request.urlopen(node_api + "/", timeout=5) as answer:
        assert json.loads(answer.read()) == ["self/", "devices/", "sources/", "flows/",
                                             "senders/", "receivers/"]
    with urllib.request.urlopen(node_api + "/receivers", timeout=5) as answer:
        assert json.loads(answer.read()) == []  # a gateway of senders: none
    with urllib.request.urlopen(f"{node_api}/senders/{after['id']}", timeout=5) as answer:
        assert json.loads(answer.read())["version"] == after["version"]
    with urllib.request.urlopen(node_api + "/self", timeout=5) as answer:
        node = json.loads(answer.read())
    assert node["id"] in state["resources"]["node"]
    assert node["api"]["endpoints"] == [{"host": "127.0.0.1", "port": web,
                                         "protocol": "http"}]


def test_registry_killed_and_restarted_mid_run_sapd_converges(
        sapd_factory: Any, registry: RegistryProcess) -> None:
    web = free_tcp_port()
    daemon: Daemon = sapd_factory(config=config(registry.url, web)).start()
    announce_many(200)
    wait_for(lambda: senders(registry) == 200, 10, interval=0.2, what="200 registered")
    registry.kill()
    announce_many(100, start=200)  # heard while the registry is away
    wait_for(lambda: sum(daemon.stats()["nmos"]["errors"].values()) > 0, 10,
             what="the outage noticed")
    registry.start()  # empty: it forgot everything
    # a heartbeat 404s (or the node POST lands fresh): everything again, in order
    wait_for(lambda: senders(registry) == 300, 40, interval=0.5,
             what="all 300 registered again after the restart")
    state = registry.state()
    assert not state["violations"], state["violations"][:5]
    assert daemon.stats()["nmos"]["state"] == "registered"
    # heartbeats keep us alive past the registry's 12 s garbage collection
    time.sleep(13)
    state = registry.state()
    assert senders(registry) == 300 and "garbage_collected" not in state["counts"]
    beats = state["heartbeats"]
    assert len(beats) >= 2 and all(3.5 < b - a < 6.5 for a, b in itertools.pairwise(beats))


def test_stale_node_from_a_previous_run_is_deleted_and_registered_again(
        sapd_factory: Any, registry: RegistryProcess) -> None:
    web = free_tcp_port()
    daemon: Daemon = sapd_factory(config=config(registry.url, web)).start()
    announce_many(5)
    wait_for(lambda: senders(registry) == 5, 10, interval=0.2, what="5 registered")
    daemon.kill()  # no goodbye: the registry still holds our node
    daemon.start()
    wait_for(lambda: registry.state()["counts"].get("node_201", 0) >= 2, 10, interval=0.2,
             what="the node registered anew (201) after the stale one was deleted")
    wait_for(lambda: senders(registry) == 5, 10, interval=0.2, what="5 registered again")
    counts = registry.state()["counts"]
    assert counts.get("node_200") == 1 and counts.get("node_deleted", 0) >= 1
    assert not registry.state()["violations"]


def test_registry_found_by_dns_sd_lowest_pri_first(sapd_factory: Any) -> None:
    """Two registries announced over mDNS (python-zeroconf, in this namespace): sapd
    registers with the one of lower pri; when it goes away, with the other."""
    best = RegistryProcess(free_tcp_port(), advertise=10).start()
    other = RegistryProcess(free_tcp_port(), advertise=20).start()
    try:
        web = free_tcp_port()
        daemon: Daemon = sapd_factory(config=(
            f'{LIMITS}[web]\nlisten = "127.0.0.1:{web}"\n[nmos]\ndiscover = true\n')).start()
        announce_many(5)
        wait_for(lambda: senders(best) == 5, 15, interval=0.2, what="the pri 10 registry")
        assert senders(other) == 0
        assert daemon.stats()["nmos"]["registry"] == best.url
        best.kill()  # gone without a goodbye: its mDNS record stays until it times out,
        # and the failures move sapd to the next registry
        wait_for(lambda: senders(other) == 5, 40, interval=0.5, what="the pri 20 registry")
        assert not other.state()["violations"]
    finally:
        best.kill()
        other.kill()


@pytest.mark.parametrize("mode", ["slow", "garbage", "huge"])
def test_hostile_registry_costs_a_back_off_not_memory(sapd_factory: Any,
                                                      mode: str) -> None:
    hostile = RegistryProcess(free_tcp_port(), mode=mode).start()
    try:
        daemon: Daemon = sapd_factory(config=config(hostile.url, free_tcp_port())).start()
        announce_many(50)
        wait_for(lambda: sum(daemon.stats()["nmos"]["errors"].values()) >= 2, 30,
                 interval=0.2, what="registry failures counted")
        def degraded() -> bool:
            health = daemon.get("/v1/health")
            return bool(health["status"] == "degraded" and health["nmos"] == "backoff")
        wait_for(degraded, 30, what="health degraded while the registry fails")
        assert len(daemon.all_sessions()) == 50
        assert daemon.proc is not None
        rss_kb = int(next(line.split()[1] for line in
                          Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:")))
        assert rss_kb < 300_000, f"sapd holds {rss_kb} kB"
        errors = daemon.stats()["nmos"]["errors"]
        print(f"\n{mode}: errors {errors}, RSS {rss_kb} kB")
    finally:
        hostile.kill()


def test_hostile_sdps_are_skipped_with_reasons_and_the_rest_registered(
        sapd_factory: Any, registry: RegistryProcess) -> None:
    web = free_tcp_port()
    daemon: Daemon = sapd_factory(config=config(registry.url, web).replace(
        "[limits]\n", "[limits]\nmax_sdp_bytes = 65536\n")).start()
    many_media = sdp_text(session=1, name="many m=") + "m=audio 5 RTP/AVP 96\r\n" * 1000
    channels = sdp_text(session=2, name="channels").replace("L24/48000/2",
                                                            "L24/48000/4294967296")
    video_av = sdp_text(session=3, name="A+V") + "m=video 5006 RTP/AVP 97\r\n" \
        "a=rtpmap:97 H264/90000\r\n"
    for text in (many_media, channels, video_av, sdp_text(session=4, name="fine")):
        send_local_multicast(announce(text, source="127.0.0.1"), SAP_GROUP)
    wait_for(lambda: sessions(daemon) == 4, 10, interval=0.1, what="4 sessions heard")
    wait_for(lambda: senders(registry) == 1, 10, interval=0.2, what="the fine one")
    wait_for(lambda: sum(daemon.stats()["nmos"]["skipped"].values()) == 3, 5,
             what="three skipped")
    assert daemon.stats()["nmos"]["skipped"] == {"channel_count": 1, "several_streams": 1,
                                                 "too_many_media": 1}
    metrics = daemon.client.request("GET", "/metrics").body.decode()
    assert 'sapd_nmos_skipped{reason="too_many_media"} 1' in metrics
    shown = run(script("sapctl"), "--socket", str(daemon.socket), "stats").stdout
    assert "nmos:     registered" in shown and "sender=1" in shown
    assert "skipped: channel_count=1  several_streams=1  too_many_media=1" in shown
    assert not registry.state()["violations"]


def test_nmos_without_web_listener_is_a_clear_start_up_error(tmp_path: Path) -> None:
    path = tmp_path / "nmos.toml"
    path.write_text('[nmos]\nregistry = "http://127.0.0.1:1"\n')
    result = run(script("sapd"), "--config", str(path), "--state-dir", str(tmp_path / "s"),
                 "--socket", str(tmp_path / "d.sock"))
    assert result.returncode == 2, result.stderr
    assert "nmos.registry: needs [web] listen" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "s") is False
