"""The state directory's files are the daemon's own: owners, ACLs and leases are not for
every local user to read (issue 13, item 10). Under systemd UMask=0077 sees to it; here
the daemons are started the way a developer does, with a umask of 022."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, sdp_text
from tests.support import free_udp_port, wait_for


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def loose_files(state: Path) -> dict[str, str]:
    """Files in the state directory that anyone but the owner may read or write."""
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in state.iterdir()
            if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077}


def test_the_state_database_was_readable_by_every_local_user(
        tmp_path: Path, umask_022: None) -> None:
    workdir = tmp_path / "a"
    (workdir / "state").mkdir(parents=True)
    # a database left by an older sapd, readable by all
    older = workdir / "state" / "directory.sqlite3"
    older.touch(mode=0o644)
    older.chmod(0o644)
    daemon = Daemon("sapd", workdir, ["--interface", "lo"]).start()
    try:
        send_local_multicast(announce(sdp_text(name="private")))
        wait_for(daemon.sessions, 5, what="the session stored")
        names = {p.name for p in daemon.state.iterdir()}
        assert {"directory.sqlite3", "directory.sqlite3-wal", "directory.sqlite3-shm",
                "lock"} <= names
        assert loose_files(daemon.state) == {}
    finally:
        daemon.stop()
    assert loose_files(daemon.state) == {}


def test_the_lease_database_was_readable_by_every_local_user(
        tmp_path: Path, umask_022: None) -> None:
    config = tmp_path / "madcapd.toml"
    config.write_text('[[scope]]\nname = "s"\nrange = "239.255.0.0/16"\n'
                      'pool = "239.255.10.1-239.255.10.4"\n')
    daemon = Daemon("madcapd", tmp_path / "m",
                    ["--listen", f"127.0.0.1:{free_udp_port()}", "--config", str(config),
                     "--sapd-socket", str(tmp_path / "none.sock")]).start()
    try:
        assert any(p.suffix == ".sqlite3" or "sqlite" in p.name
                   for p in daemon.state.iterdir())
        assert loose_files(daemon.state) == {}
    finally:
        daemon.stop()
