"""Two sapd sites on two links, one PostgreSQL directory (issue 18).

Each link is a pair of namespaces (a sender and a sapd); the sapd on one link never hears
the other link's multicast, so what a site lists of the other came through the database.
The server is the suite's (tests/postgres.py), reached over its Unix socket, which the
namespaces share with the host.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon, collect_events, netns_send, wait_session
from tests.netns.harness import Host, Network
from tests.packets import announce, sdp_text
from tests.postgres import PostgresDatabase
from tests.support import script, wait_for

# A quick profile: a session heard once lives 10 s (10 x default_period, at least the
# floor); a site is silent after max(3 heartbeats, default_period) = 3 s.
PROFILE = "default_period = 1.0\nexpiry_floor = 1.0\n"
SILENT_AFTER = 3.0
EXPIRES_AFTER = 10.0


def site_config(database: PostgresDatabase, site: str) -> str:
    return (f'site = "{site}"\n{PROFILE}refresh_flush_interval = 0.2\n'
            f'[store]\nbackend = "postgresql"\ndsn = "{database.dsn}"\n')


def campus(net: Network, daemons: Any, database: PostgresDatabase
           ) -> tuple[tuple[Host, str, Daemon], tuple[Host, str, Daemon]]:
    """Two links (sender -> sapd), a site on each, both started."""
    sites = []
    for n, site in enumerate(("north", "south")):
        sender, listener = net.host(f"a{n}"), net.host(f"b{n}")
        iface, _ = net.link(sender, listener, 81 + n)
        sapd = daemons("sapd", listener, name=f"sapd-{site}",
                       config=site_config(database, site)).start()
        sites.append((sender, iface, sapd))
    return sites[0], sites[1]


def send(tmp_path: Path, sender: Host, iface: str, session: int, name: str) -> float:
    """One announcement from ``sender``; returns when it was sent (before its commit)."""
    path = tmp_path / f"p{session}"
    path.write_bytes(announce(sdp_text(session=session, name=name,
                                       group=f"239.255.40.{session}"),
                              source=sender.address()))
    sent = time.monotonic()
    netns_send(sender.name, "239.255.255.255", [path], iface)
    return sent


def test_each_sites_sessions_reach_the_other_within_a_second_of_commit(
        net: Network, daemons: Any, postgres_database: PostgresDatabase,
        tmp_path: Path) -> None:
    (sender_n, if_n, north), (sender_s, if_s, south) = campus(net, daemons, postgres_database)
    for session, (sender, iface, here, there, site) in enumerate((
            (sender_n, if_n, north, south, "north"), (sender_s, if_s, south, north, "south")),
            start=1):
        thread, events = collect_events(there, 1)
        sent = send(tmp_path, sender, iface, session, f"heard at {site}")
        thread.join(5)
        arrived = time.monotonic()
        assert events, f"{there.name} heard no event of {site}'s session"
        # the time from the datagram's sending bounds the time from its commit
        assert arrived - sent < 1.0, f"{arrived - sent:.3f} s from {site} to the other"
        event = events[0]
        assert (event["event"], event["session"]["name"], event["session"]["site"]) == \
            ("new", f"heard at {site}", site)
        (listed,) = wait_session(there, lambda s, site=site: s["site"] == site, 1)
        assert listed["name"] == f"heard at {site}" and not listed["local"]
        (own,) = here.sessions(f"?site={site}")
        assert own["id"] == listed["id"]
    assert {s["site"] for s in north.sessions()} == {"north", "south"}
    assert [s["name"] for s in south.sessions("?site=north")] == ["heard at north"]
    listing = subprocess.run([script("sapctl"), "--socket", str(south.socket), "list",
                              "--site", "north"], capture_output=True, text=True, check=True,
                             timeout=30).stdout
    header, line = listing.splitlines()
    assert line[header.index("SITE"):].split()[0] == "north", listing

    # A local announcement stays its site's: listed everywhere, withdrawn only there.
    made = north.client.send_json("POST", "/v1/announcements", {
        "sdp": sdp_text(session=9, name="north's own", group="239.255.40.9",
                        origin=sender_n.address())})
    (there,) = wait_session(south, lambda s: s["id"] == made["id"], 1)
    assert there["local"] and there["site"] == "north"
    with pytest.raises(ClientError) as refused:
        south.client.request("DELETE", f"/v1/announcements/{made['id']}")
    assert refused.value.status == 404
    north.client.request("DELETE", f"/v1/announcements/{made['id']}")
    wait_for(lambda: not south.sessions("?site=north&local=true"), 2, what="withdrawn")


def test_a_killed_site_goes_stale_then_expires(
        net: Network, daemons: Any, postgres_database: PostgresDatabase,
        tmp_path: Path) -> None:
    (sender_n, if_n, north), (_, _, south) = campus(net, daemons, postgres_database)
    send(tmp_path, sender_n, if_n, 1, "from north")
    (before,) = wait_session(south, lambda s: s["site"] == "north", 2)
    assert not before["stale"]
    north.kill()
    killed = time.monotonic()
    wait_for(lambda: [s["stale"] for s in south.sessions("?site=north")] == [True],
             SILENT_AFTER + 1.5, what="north's session stale at south")
    assert time.monotonic() - killed < SILENT_AFTER + 1.5
    sites = {s["site"]: s for s in south.get("/v1/sites")["sites"]}
    assert (sites["north"]["silent"], sites["south"]["silent"]) == (True, False), sites
    thread, events = collect_events(south, 1)
    wait_for(lambda: not south.sessions("?site=north"), EXPIRES_AFTER + 3,
             what="north's session expired at south")
    thread.join(3)
    assert [(e["event"], e["session"]["site"]) for e in events] == [("expired", "north")]
    health = south.get("/v1/health")
    assert health["status"] == "ok"


def test_a_database_restart_mid_run_loses_nothing(
        net: Network, daemons: Any, postgres_database: PostgresDatabase,
        tmp_path: Path) -> None:
    (sender_n, if_n, north), (sender_s, if_s, south) = campus(net, daemons, postgres_database)
    for n in range(1, 4):
        send(tmp_path, sender_n, if_n, n, f"north {n}")
        send(tmp_path, sender_s, if_s, 10 + n, f"south {n}")
    wait_for(lambda: len(north.sessions()) == 6, 3, what="six sessions")
    server = postgres_database.server
    server.stop()
    try:
        for n in range(4, 7):  # heard while the database is down: held in memory
            send(tmp_path, sender_n, if_n, n, f"north {n}")
            send(tmp_path, sender_s, if_s, 10 + n, f"south {n}")
        wait_for(lambda: north.get("/v1/health")["status"] == "degraded", 3,
                 what="north degraded")
        health = north.get("/v1/health")
        assert health["store"] == "database_unreachable"
        with pytest.raises(ClientError) as unavailable:
            north.sessions()
        assert unavailable.value.status == 503
    finally:
        server.start()
    for sapd in (north, south):
        wait_for(lambda sapd=sapd: sapd.get("/v1/health")["status"] == "ok", 10,
                 what=f"{sapd.name} recovered")
    want = {f"{site} {n}" for site in ("north", "south") for n in range(1, 7)}
    for sapd in (north, south):
        wait_for(lambda sapd=sapd: {s["name"] for s in sapd.sessions()} == want, 5,
                 what=f"all twelve at {sapd.name}")
    failures = north.stats()["store"]["failures"]
    assert failures.get("database_unreachable", 0) >= 1
