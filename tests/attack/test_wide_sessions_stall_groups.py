"""Every c= may name up to 256 groups (sapd/sdp.py expands them all), and GET /v1/groups
builds, sorts and encodes the set of every group of every session on sapd's event loop.
1,000 announcements of 256 groups each (1,000 datagrams; the rate limit does not stop
them, see test_header_source_forgery) make one GET /v1/groups stall sapd for about a
second and a half and answer 4 MB; madcapd polls it every sapd_poll seconds and then rebuilds its
avoid set with ipaddress.ip_address per group on its own loop (madcap/server.py
set_avoided, ~5-7 us a group: 1.3 s here, 17 s for 10,000 such sessions)."""

from __future__ import annotations

import threading
import time
from typing import Any

from madcap.pool import scope_from_config
from madcap.server import MadcapServer
from sapd.plumbing.client import UnixClient
from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce
from tests.support import wait_for

WIDE = ("v=0\r\no=- {n} 1 IN IP4 10.0.0.1\r\ns=w{n}\r\nc=IN IP4 239.{a}.{b}.0/32/256\r\n"
        "t=0 0\r\nm=audio 5004 RTP/AVP 96\r\n")
SESSIONS = 1000


def test_groups_of_wide_sessions_do_not_stall_sapd(sapd_factory: Any) -> None:
    daemon: Daemon = sapd_factory(config="[limits]\nsource_rate = 100000.0\n"
                                         "source_burst = 100000.0\n").start()
    for n in range(SESSIONS):
        send_local_multicast(announce(WIDE.format(n=n, a=1 + n // 256, b=n % 256)),
                             "239.255.255.255")
    wait_for(lambda: daemon.stats()["sessions"] == SESSIONS, 30, what="all sessions in")
    answers: list[dict[str, Any]] = []
    poller = threading.Thread(target=lambda: answers.append(
        UnixClient(daemon.socket, timeout=60).get_json("/v1/groups")))
    poller.start()
    time.sleep(0.05)
    worst = 0.0
    while poller.is_alive():
        started = time.monotonic()
        UnixClient(daemon.socket, timeout=60).get_json("/v1/health")
        worst = max(worst, time.monotonic() - started)
    poller.join()
    assert worst < 0.1, f"/v1/health waited {worst:.2f} s behind one GET /v1/groups"
    # adjacent sessions' ranges merge: 239.1.0.0 up to the last session's last group
    last = f"239.{1 + (SESSIONS - 1) // 256}.{(SESSIONS - 1) % 256}.255"
    assert answers[0]["ranges"] == [{"first": "239.1.0.0", "last": last,
                                     "count": SESSIONS * 256}], answers[0]["ranges"]
    assert answers[0]["groups_complete"] is False


def test_madcapd_takes_sapds_groups_without_stalling() -> None:
    groups = [f"239.{1 + n // 256}.{n % 256}.{i}" for n in range(SESSIONS) for i in range(256)]
    server = MadcapServer([scope_from_config({"name": "local", "range": "239.255.0.0/16"}, 0)],
                          [], 1000.0)
    started = time.process_time()
    server.set_avoided(groups)
    elapsed = time.process_time() - started
    assert elapsed < 0.1, f"set_avoided of {len(groups)} groups took {elapsed:.2f} s of CPU"
