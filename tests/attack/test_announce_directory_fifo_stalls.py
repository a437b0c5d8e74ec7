"""The announce directory is read on the event loop with Path.read_text: a FIFO named
*.sdp (any user who may drop files there: the file's owner becomes the announcement's
owner, so that is the intended use) blocks open() until a writer comes, and sapd stops
answering everything: the control socket, SAP reception, its own announcements. A
symlink to /dev/zero would read until memory runs out (no size bound either)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from sapd.plumbing.client import ClientError, UnixClient
from tests.daemons import Daemon


def test_a_fifo_in_the_announce_directory_does_not_stall_sapd(tmp_path: Path,
                                                              sapd_factory: Any) -> None:
    folder = tmp_path / "announce.d"
    folder.mkdir()
    daemon: Daemon = sapd_factory(name="dir", config=f'[announce]\ndirectory = "{folder}"\n')
    daemon.start()
    fifo = folder / "trap.sdp"
    os.mkfifo(fifo)
    time.sleep(3.0)  # more than one directory scan
    try:
        UnixClient(daemon.socket, timeout=2).get_json("/v1/health")
        answered = True
    except (ClientError, OSError):
        answered = False
    finally:
        # let the blocked open() return (it reads EOF), so the daemon can be stopped
        with contextlib.suppress(OSError):  # ENXIO: nobody is blocked on it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        fifo.unlink()
    assert answered, "sapd stopped answering with a FIFO in its announce directory"
    metrics = daemon.client.request("GET", "/metrics").body.decode()
    assert 'sapd_announce_files_refused_total{reason="not_regular"} 1' in metrics, metrics
    assert any(e.get("event") == "announce file refused" and "FIFO" in e.get("reason", "")
               for e in daemon.log_events()), daemon.logs()

