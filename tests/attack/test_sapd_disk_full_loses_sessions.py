"""Issue 13 item 2, not fixed: sessions heard while sapd's state disk is full are lost
for good. The refused batch is dropped (sapd/hub.py Hub._committed: "the next change of
those sessions writes them whole again"), and the engine keeps the sessions, so their
re-announcements take the refresh fast path and never write them again. Dante and
AES67 devices announce one version forever: their streams stay missing from the list
while /v1/stats counts them and /v1/health says ok."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, sdp_text
from tests.support import fill, small_filesystem, wait_for

HEARD_WHILE_FULL = 50


def _announce_all() -> None:
    for n in range(HEARD_WHILE_FULL):
        send_local_multicast(announce(sdp_text(session=100 + n, name=f"dante{n}")))


def test_sessions_heard_while_the_disk_was_full_are_listed_once_it_has_room(
        tmp_path: Path, sapd_factory: Any) -> None:
    with small_filesystem(tmp_path / "small", "4M") as small:
        daemon: Daemon = sapd_factory(name="full")
        daemon.state = small / "state"
        daemon.start()
        send_local_multicast(announce(sdp_text(session=1, name="before")))
        wait_for(lambda: len(daemon.sessions()) == 1, 5, what="the first session stored")
        filler = fill(small)
        _announce_all()
        wait_for(lambda: daemon.stats()["packets"]["new"] == 1 + HEARD_WHILE_FULL, 5,
                 what="every announcement counted")
        time.sleep(1.0)
        health_while_full = daemon.get("/v1/health")["status"]
        filler.unlink()
        for _ in range(3):  # devices keep announcing, unchanged, as they do
            time.sleep(1.0)
            _announce_all()
        time.sleep(1.0)
        listed = len(daemon.sessions("?limit=1000"))
        daemon.stop()
    assert listed == 1 + HEARD_WHILE_FULL, \
        f"{listed} listed of {1 + HEARD_WHILE_FULL} heard; health while full: " \
        f"{health_while_full}"
