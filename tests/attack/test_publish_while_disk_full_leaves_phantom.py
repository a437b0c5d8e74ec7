"""POST /v1/announcements while sapd's state disk is full. Found: the commit failed, yet
the engine kept the record, so once the disk had room the same POST was a 409 "already
listed" for a session that was neither listed nor announced. Now the publish waits until
its record is durable (the hub retries a full disk), so once there is room the session is
listed and announced once, and a retry is told so: never a phantom."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.packets import sdp_text
from tests.support import fill, small_filesystem, wait_for


def _post(daemon: Daemon, body: dict[str, Any]) -> tuple[int, str]:
    try:
        response = daemon.client.request("POST", "/v1/announcements",
                                         body=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        return response.status, ""
    except ClientError as exc:
        return exc.status, str(exc)


def test_a_publish_refused_for_a_full_disk_can_be_retried(tmp_path: Path,
                                                          sapd_factory: Any) -> None:
    with small_filesystem(tmp_path / "small", "4M") as small:
        daemon: Daemon = sapd_factory(name="full")
        daemon.state = small / "state"
        daemon.start()
        filler = fill(small)
        body = {"sdp": sdp_text(name="while full") + "a=pad:" + "x" * 8000 + "\r\n"}
        first = _post(daemon, body)
        filler.unlink()
        wait_for(lambda: [s["name"] for s in daemon.sessions()] == ["while full"], 15,
                 what="the publish made durable once the disk has room")
        second = _post(daemon, body)
        listed = [s["name"] for s in daemon.sessions()]
        announced = [a["name"] for a in daemon.get("/v1/announcements")["announcements"]]
        daemon.stop()
    assert first[0] in (0, 201, 503) or first[0] >= 500, f"the first POST gave {first}"
    assert second[0] == 409, f"retry gave {second}; listed {listed}; announced {announced}"
    assert listed == ["while full"] and announced == ["while full"], (listed, announced)
