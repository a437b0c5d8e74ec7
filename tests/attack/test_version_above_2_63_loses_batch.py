"""Issue 13 item 1 (fixed by trust-numbers: decimal TEXT versions). RFC 8866 makes the
o= version 1*DIGIT and recommends NTP timestamps (64 bits). A version of 2^63 or more
passed the engine (counted "new", in /v1/stats sessions) but the SQLite column was a
64-bit signed INTEGER: the store raised OverflowError, the whole batch was refused, and
unrelated sessions that arrived in the same batch were never listed. The engine kept
them, so the fast path only refreshed them from then on: they stayed missing while they
were announced. Real VLC 3.0 writes 64-bit NTP versions too
(tests/interop/test_vlc.py::test_vlc_announcement_is_listed)."""

from __future__ import annotations

import time

from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, sdp_text
from tests.support import wait_for

NTP_VERSION = 17201912864673439254  # a 64-bit NTP value, above 2**63, as VLC writes


def test_a_version_above_2_63_costs_no_other_session(sapd: Daemon) -> None:
    for n in range(5):  # one burst: one store batch
        send_local_multicast(announce(sdp_text(session=10 + n, name=f"innocent{n}")))
    send_local_multicast(announce(sdp_text(session=2, version=NTP_VERSION, name="ntp")))
    wait_for(lambda: sapd.stats()["packets"]["new"] == 6, 5, what="6 new counted")
    time.sleep(0.5)
    for n in range(5):  # re-announced: still missing, the engine thinks they are stored
        send_local_multicast(announce(sdp_text(session=10 + n, name=f"innocent{n}")))
    time.sleep(0.5)
    names = sorted(s["name"] for s in sapd.sessions())
    assert names == sorted([f"innocent{n}" for n in range(5)] + ["ntp"]), \
        f"listed {names}; engine holds {sapd.stats()['sessions']}"


def test_health_is_degraded_while_the_directory_refuses_a_batch(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(session=2, version=NTP_VERSION, name="ntp")))
    wait_for(lambda: sapd.stats()["packets"]["new"] == 1, 5, what="counted")
    time.sleep(0.5)
    listed = len(sapd.sessions())
    if listed != sapd.stats()["sessions"]:
        assert sapd.get("/v1/health")["status"] != "ok", \
            "memory and disk disagree, and health says ok"
