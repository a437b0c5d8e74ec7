"""The NMOS bridge's bookkeeping between the directory and the registration machine
(no sockets: a directory of records in a dict, events fed by hand): devices live as long
as a session of their host does, a session that stops mapping is withdrawn and counted,
an event flood turns into one comparison of the whole directory, and discovery orders
registries by pri."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sapd.bridges.nmos import NmosBridge
from sapd.bridges.nmos_discovery import Candidate, order_registries
from sapd.config import NmosConfig
from sapd.lifecycle import Event
from sapd.plumbing.clock import SteadyClock
from sapd.records import SessionRecord
from tests.packets import sdp_text
from tests.support import FakeTime


class Directory:
    """The two reads the bridge makes of a store."""

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}

    def get(self, sid: str) -> SessionRecord | None:
        return self.records.get(sid)

    def iter_all(self, light: bool = False, own: bool = False) -> Iterator[SessionRecord]:
        yield from list(self.records.values())


def record(n: int, text: str | None = None, origin: str = "10.0.0.1") -> SessionRecord:
    text = text or sdp_text(session=n, name=f"S{n}", origin=origin)
    return SessionRecord(id=f"sid{n}", source=origin, identity=f"- {n} IN IP4 {origin}",
                         version=1, msg_hash=n, origin_address=origin, name=f"S{n}",
                         info=None, sdp=text, scope="", sap_group="239.255.255.255",
                         first_seen=0.0, last_seen=0.0, heard_via=(("sap", "239.255.255.255",
                                                                    "lo", origin),))


def bridge(directory: Directory, queue: int = 10_000,
           clock: SteadyClock | None = None) -> NmosBridge:
    config = NmosConfig(registry="http://192.0.2.9:8010", queue=queue)
    made = NmosBridge(config, "machine:/state", directory,  # type: ignore[arg-type]
                      clock or SteadyClock(), ("0.0.0.0", 8375), "http://sapd.example:8375",
                      lambda: ["lo"], "test")
    made._choose_registry()
    return made


def event(kind: str, sid: str) -> Event:
    return Event(kind, sid, 0.0, None)  # type: ignore[arg-type]


def settle(made: NmosBridge) -> None:
    if made._resync:
        made._resync = False
        made._compare_all()
    made._map_some()
    made._put_node()


def kinds(made: NmosBridge) -> dict[str, int]:
    found: dict[str, int] = {}
    for kind, _ in made.machine.desired:
        found[kind] = found.get(kind, 0) + 1
    return found


def test_device_lives_while_a_session_of_its_host_does() -> None:
    directory = Directory()
    for n in range(3):
        directory.records[f"sid{n}"] = record(n)
    made = bridge(directory)
    settle(made)
    assert kinds(made) == {"node": 1, "device": 1, "source": 3, "flow": 3, "sender": 3}
    assert made.href == "http://sapd.example:8375/"
    sender: Any = made.resources("sender")[0]
    assert sender["manifest_href"].startswith("http://sapd.example:8375/v1/sessions/sid")
    for n in range(3):
        del directory.records[f"sid{n}"]
        made.on_event(event("deleted", f"sid{n}"))
        settle(made)
    assert kinds(made) == {"node": 1}


def test_session_that_stops_mapping_is_withdrawn_and_counted() -> None:
    directory = Directory()
    directory.records["sid1"] = record(1)
    made = bridge(directory)
    settle(made)
    opus = sdp_text(session=1, name="S1").replace("L24/48000/2", "opus/48000/2")
    directory.records["sid1"] = record(1, opus)
    made.on_event(event("changed", "sid1"))
    settle(made)
    assert kinds(made) == {"node": 1}
    assert made.stats()["skipped"] == {"unsupported_media": 1}
    assert 'sapd_nmos_skipped{reason="unsupported_media"} 1' in made.metrics_lines()


def test_event_flood_becomes_one_comparison_of_the_whole_directory() -> None:
    directory = Directory()
    made = bridge(directory, queue=10)
    settle(made)
    for n in range(50):
        directory.records[f"sid{n}"] = record(n)
        made.on_event(event("new", f"sid{n}"))
    assert made.overflows == 1 and len(made._queue) <= 10
    while made._queue or made._resync:
        settle(made)
    assert kinds(made)["sender"] == 50


def test_ptp_grandmaster_appears_on_the_node_while_a_source_uses_it() -> None:
    directory = Directory()
    ptp = "a=ts-refclk:ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0\r\n"
    directory.records["sid1"] = record(1, sdp_text(session=1, extra=ptp))
    made = bridge(directory)
    settle(made)
    node: Any = made.resource("node", made.node_id)
    assert [c["gmid"] for c in node["clocks"]] == ["39-a7-94-ff-fe-07-cb-d0"]
    del directory.records["sid1"]
    made.on_event(event("expired", "sid1"))
    settle(made)
    node = made.resource("node", made.node_id)
    assert node["clocks"] == []


def test_discovery_orders_by_pri_and_keeps_only_plain_http_v1_3() -> None:
    found = order_registries([
        Candidate("b", "192.0.2.2", 80, {"pri": "10", "api_proto": "http",
                                         "api_ver": "v1.2,v1.3", "api_auth": "false"}),
        Candidate("a", "192.0.2.1", 80, {"pri": "0", "api_proto": "http",
                                         "api_ver": "v1.3", "api_auth": "false"}),
        Candidate("tls", "192.0.2.3", 443, {"pri": "0", "api_proto": "https"}),
        Candidate("old", "192.0.2.4", 80, {"pri": "0", "api_ver": "v1.2"}),
        Candidate("auth", "192.0.2.5", 80, {"pri": "0", "api_auth": "true"}),
        Candidate("nopri", "2001:db8::1", 80, {"api_ver": "v1.3"}),
    ])
    assert found == ["http://192.0.2.1:80", "http://192.0.2.2:80", "http://[2001:db8::1]:80"]


def test_without_public_url_href_is_the_address_that_reaches_the_registry() -> None:
    config = NmosConfig(registry="http://127.0.0.1:8010")
    made = NmosBridge(config, "machine:/state", Directory(),  # type: ignore[arg-type]
                      SteadyClock(), ("0.0.0.0", 8375), None, lambda: ["lo"], "test")
    made._choose_registry()
    settle(made)
    node: Any = made.resource("node", made.node_id)
    assert made.href == node["href"] == "http://127.0.0.1:8375/"
    assert node["api"]["endpoints"] == [{"host": "127.0.0.1", "port": 8375,
                                         "protocol": "http"}]


def test_wall_clock_stepped_back_neither_stalls_heartbeats_nor_lowers_versions() -> None:
    fake = FakeTime()
    clock = SteadyClock(fake.wall, fake.monotonic)
    directory = Directory()
    directory.records["sid1"] = record(1)
    made = bridge(directory, clock=clock)
    settle(made)
    versions = []
    for _ in range(10):
        for request in made.machine.poll(clock.now()):
            if request.body is not None:
                versions.append(request.body["data"]["version"])
            made.machine.response(request.id, 201, clock.now())
    assert made.machine.state == "registered"
    fake.wall_now -= 3600.0  # NTP steps the clock back an hour
    fake.monotonic_now += 5.0
    (beat,) = made.machine.poll(clock.now())
    assert beat.purpose == "heartbeat"
    made.machine.response(beat.id, 200, clock.now())
    directory.records["sid1"] = record(1, sdp_text(session=1, name="renamed"))
    made.on_event(event("changed", "sid1"))
    settle(made)
    posts = [r for r in made.machine.poll(clock.now()) if r.body is not None]
    assert {r.body["type"] for r in posts if r.body} == {"source", "flow", "sender"}
    later = [r.body["data"]["version"] for r in posts if r.body]
    stamps = [tuple(int(x) for x in v.split(":")) for v in [versions[-1], *later]]
    assert stamps == sorted(set(stamps))  # each after the last, the clock step no matter
