"""[ravenna]: on by default wherever mDNS can be browsed, with no error where nothing
answers; enabled = false turns it off; a restart keeps RAVENNA rows only for the grace."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.daemons import Daemon
from tests.support import wait_for


def test_ravenna_ingest_is_on_by_default_and_quiet_with_no_devices(sapd: Daemon) -> None:
    stats = sapd.stats()["ravenna"]
    assert stats["state"] == "on" and stats["services"] == 0 and stats["refusals"] == {}
    assert sapd.get("/v1/health")["status"] == "ok"
    assert '"level": "error"' not in sapd.logs()
    assert "sapd_ravenna_services 0" in sapd.client.request("GET", "/metrics").body.decode()


def test_enabled_false_turns_ravenna_ingest_off(sapd_factory: Any) -> None:
    daemon = sapd_factory(config="[ravenna]\nenabled = false\n").start()
    assert daemon.stats()["ravenna"] == {"state": "off"}
    assert "sapd_ravenna" not in daemon.client.request("GET", "/metrics").body.decode()


def test_a_ravenna_row_left_by_a_previous_run_expires_after_the_grace(
        sapd_factory: Any, tmp_path: Path) -> None:
    """Nothing withdraws a service while sapd is down: a row stored as heard over RAVENNA
    must not outlive its device for ever."""
    first = sapd_factory(config="[ravenna]\nenabled = false\n").start()
    first.stop()
    db = sqlite3.connect(first.state / "directory.sqlite3")
    db.execute("""INSERT INTO sessions (id, source, identity, version, msg_hash,
                  origin_address, name, sdp, scope, sap_group, first_seen, last_seen,
                  heard_via) VALUES ('r1', '10.9.9.9', '- 1 IN IP4 10.9.9.9', '1', 0,
                  '10.9.9.9', 'left over', 'v=0\r\n', '', '', 1.0, 2.0,
                  '[["ravenna", "", "", "10.9.9.9"]]')""")
    db.commit()
    db.close()
    (tmp_path / "a.toml").write_text("[ravenna]\nenabled = false\ngrace = 2.0\n")
    first.start()
    assert [s["name"] for s in first.sessions()] == ["left over"]
    wait_for(lambda: first.sessions() == [], 10, what="expired after the grace")
