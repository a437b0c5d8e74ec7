"""Issue 13 item 4, not fixed: POST /v1/announcements accepts any positive float as
"interval". 1e-9 s added to a wall-clock timestamp rounds back to the same timestamp, so
the scheduler's due() loop never ends: the event loop stalls and memory climbs. NaN
(Python's json accepts it) passes the `<= 0` check too and silences the announcement."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sapd.plumbing.client import ClientError, UnixClient
from tests.daemons import Daemon
from tests.packets import sdp_text


def _alive(daemon: Daemon) -> bool:
    try:
        return bool(UnixClient(daemon.socket, timeout=2).get_json("/v1/health"))
    except (ClientError, OSError):
        return False


def test_tiny_interval_is_refused_or_clamped_and_sapd_keeps_answering(sapd: Daemon) -> None:
    client = UnixClient(sapd.socket, timeout=2)
    try:
        status = client.send_json("POST", "/v1/announcements",
                                  {"sdp": sdp_text(name="tiny"), "interval": 1e-9})
        accepted: Any = status
    except ClientError as exc:
        accepted = exc.status
    except OSError:  # the request itself hung: that is the stall
        accepted = "stalled"
    time.sleep(0.5)
    alive = _alive(sapd)
    if not alive:
        sapd.kill()  # it eats ~90 MB/s; do not leave it to the fixture's SIGTERM
    assert alive, f"sapd stopped answering after interval=1e-9 (POST gave {accepted!r})"


def test_nan_interval_is_refused(sapd: Daemon) -> None:
    body = '{"sdp": ' + json.dumps(sdp_text(name="nan")) + ', "interval": NaN}'
    with pytest.raises(ClientError) as refused:
        sapd.client.request("POST", "/v1/announcements", body=body.encode(),
                            headers={"Content-Type": "application/json"})
    assert refused.value.status == 400
