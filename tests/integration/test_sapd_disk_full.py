"""A full disk under the state directory: nothing heard meanwhile is lost (issue 13,
item 2). A real, small tmpfs holds the database; a filler file takes its last bytes."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, sdp_text
from tests.support import run, script, small_filesystem, wait_for

SESSIONS = 2_000
CONFIG = "[limits]\nsource_rate = 100000\nsource_burst = 100000\n"


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with open(filler, "ab", buffering=0) as out:  # and the last partial block
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    workdir = tmp_path / "a"
    with small_filesystem(workdir / "state", "16m"):
        yield workdir


def listed(daemon: Daemon) -> int:
    return len(daemon.all_sessions())


def test_sessions_heard_while_the_disk_was_full_were_lost_for_good(small_state: Path) -> None:
    config = small_state / "sapd.toml"
    config.write_text(CONFIG)
    daemon = Daemon("sapd", small_state, ["--interface", "lo", "--config", str(config)])
    daemon.start()
    try:
        filler = fill(daemon.state)
        for n in range(1, SESSIONS + 1):
            send_local_multicast(announce(sdp_text(session=n, name=f"full {n}")))
            if n % 50 == 0:
                time.sleep(0.01)  # within what a loopback socket buffer holds
        wait_for(lambda: daemon.stats()["sessions"] == SESSIONS, 20,
                 what=f"{SESSIONS} sessions heard")
        health: dict[str, Any] = daemon.get("/v1/health")
        assert health["status"] == "degraded" and health["store"] == "disk_full", health
        stats = daemon.stats()
        assert stats["store"]["problem"] == "disk_full"
        assert stats["store"]["failures"]["disk_full"] >= 1
        assert stats["store"]["failures"].get("undone", 0) == 0
        metrics = daemon.client.request("GET", "/metrics").body.decode()
        assert 'sapd_store_failures_total{reason="disk_full"}' in metrics
        assert "sapd_store_degraded 1" in metrics
        assert listed(daemon) < SESSIONS  # not on disk yet: held, not listed
        shown = run(script("sapctl"), "--socket", str(daemon.socket), "stats").stdout
        assert "degraded: the store refuses writes (disk_full)" in shown, shown
        print(f"while full: {listed(daemon)} of {SESSIONS} listed, health {health}")
        filler.unlink()
        started = time.monotonic()
        wait_for(lambda: listed(daemon) == SESSIONS, 30, interval=0.2,
                 what=f"all {SESSIONS} sessions in the directory")
        wait_for(lambda: daemon.get("/v1/health")["status"] == "ok", 10, what="health ok")
        print(f"all listed {time.monotonic() - started:.2f} s after space came back")
        assert "sapd_store_degraded 0" in daemon.client.request("GET", "/metrics").body.decode()
        assert daemon.stop() == 0
        daemon.start()
        assert listed(daemon) == SESSIONS
        assert daemon.get("/v1/health")["status"] == "ok"
    finally:
        daemon.stop()


def test_sapd_stops_promptly_while_the_disk_is_full(small_state: Path) -> None:
    """Held writes must not hold up a stop: what the store still refuses is logged as
    lost (a restart lists what is on disk)."""
    daemon = Daemon("sapd", small_state, ["--interface", "lo"]).start()
    fill(daemon.state)
    send_local_multicast(announce(sdp_text(name="held")))
    wait_for(lambda: daemon.get("/v1/health")["status"] == "degraded", 10,
             what="health degraded")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert any(e.get("event") == "the store refused the last writes; lost"
               for e in daemon.log_events())
