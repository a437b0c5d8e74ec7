"""Issue 13 item 10, not fixed for sapd: outside systemd (make run, or any start
without UMask=) sapd's directory.sqlite3 is created 0644 under the default umask 022,
so every local user reads the owners, ACLs and blobs of local announcements."""

from __future__ import annotations

import stat

from tests.daemons import Daemon, send_local_multicast, wait_session
from tests.packets import announce, sdp_text


def test_the_directory_database_is_not_world_readable(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(name="any")))
    wait_session(sapd, lambda s: s["name"] == "any")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in sapd.state.iterdir()
             if p.name.startswith("directory.sqlite3")}
    assert modes and all(mode & 0o007 == 0 for mode in modes.values()), \
        {name: oct(mode) for name, mode in modes.items()}
