"""Publishing through sapd: another sapd on the same host hears it as a remote session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon, wait_session
from tests.support import ROOT, need_root, run, script, wait_for

EXAMPLE = ROOT / "examples" / "lab-tone.sdp"


@pytest.fixture
def pair(sapd_factory: Any) -> tuple[Daemon, Daemon]:
    a = sapd_factory(name="a").start()
    b = sapd_factory(name="b").start()
    return a, b


def post(daemon: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = daemon.client.send_json("POST", "/v1/announcements", body)
    return result


def test_announce_is_heard_by_another_sapd(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    started = time.monotonic()
    made = post(a, {"sdp": EXAMPLE.read_text()})
    (heard,) = wait_session(b, lambda s: s["name"] == "Lab tone 1 kHz", timeout=3)
    assert time.monotonic() - started < 1.0
    mine = a.get(f"/v1/sessions/{made['id']}")["session"]
    assert mine["local"] and not heard["local"]
    assert heard["identity"] == mine["identity"] and heard["groups"] == ["239.255.10.1"]
    assert heard["media"] == ["audio"] and heard["sap_group"] == "239.255.255.255"
    assert a.stats()["drops"].get("own_packet", 0) >= 1  # a did not re-ingest its own
    assert [s["local"] for s in a.sessions()] == [True]


def test_update_replaces_and_withdraw_removes(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    made = post(a, {"sdp": EXAMPLE.read_text()})
    wait_session(b, lambda s: s["name"] == "Lab tone 1 kHz")
    changed = a.client.send_json("PUT", f"/v1/announcements/{made['id']}",
                                 {"sdp": EXAMPLE.read_text().replace("1 kHz", "2 kHz")})
    # raised by sapd (the caller kept version 1); o= numbers are decimal strings in JSON
    assert changed["session"]["version"] == "2"
    wait_session(b, lambda s: s["name"] == "Lab tone 2 kHz")
    assert len(b.sessions()) == 1  # replaced, not listed twice
    a.client.request("DELETE", f"/v1/announcements/{made['id']}")
    start = time.monotonic()
    wait_for(lambda: b.sessions() == [], 2, what="withdrawn on b")
    assert time.monotonic() - start < 2
    assert a.sessions() == []


def deletions_sent(daemon: Daemon) -> int:
    for line in daemon.client.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("sapd_deletions_sent_total "):
            return int(line.split()[1])
    raise AssertionError("sapd_deletions_sent_total missing from /metrics")


def test_update_sends_no_deletion_so_receivers_see_changed(pair: tuple[Daemon, Daemon]) -> None:
    """RFC 2974 section 5: the new version supersedes the old one. A deletion before it
    made receivers list the session as deleted, then new."""
    a, b = pair
    made = post(a, {"sdp": EXAMPLE.read_text(), "interval": 1})
    wait_session(b, lambda s: s["name"] == "Lab tone 1 kHz")
    a.client.send_json("PUT", f"/v1/announcements/{made['id']}",
                       {"sdp": EXAMPLE.read_text().replace("1 kHz", "2 kHz")})
    wait_session(b, lambda s: s["name"] == "Lab tone 2 kHz")
    time.sleep(1.5)  # a deletion burst would be over, and the new version repeated
    assert deletions_sent(a) == 0
    packets = b.stats()["packets"]
    assert (packets["new"], packets["changed"], packets["deleted"]) == (1, 1, 0), packets
    assert [s["name"] for s in b.sessions()] == ["Lab tone 2 kHz"]


def test_invalid_sdp_is_400_with_line_numbers_and_nothing_stored(sapd: Daemon) -> None:
    with pytest.raises(ClientError) as info:
        post(sapd, {"sdp": "v=0\no=- 1 1 IN IP4 10.0.0.1\nc=IN IP4 239.255.1.1/4\nt=0 0\n"})
    assert info.value.status == 400
    assert info.value.body["error"]["errors"] == [
        "line 3: expected s= as line 3, found c= (the session must start v= o= s=)"]
    assert sapd.sessions() == []
    result = run(script("sapctl"), "--socket", str(sapd.socket), "announce", "-")
    assert result.returncode == 1


def test_raw_sdp_body_and_duplicate_is_409(sapd: Daemon) -> None:
    response = sapd.client.request("POST", "/v1/announcements", EXAMPLE.read_bytes(),
                                   {"Content-Type": "application/sdp"})
    assert response.status == 201
    with pytest.raises(ClientError) as info:
        sapd.client.request("POST", "/v1/announcements", EXAMPLE.read_bytes(),
                            {"Content-Type": "application/sdp"})
    assert info.value.status == 409 and "PUT" in str(info.value)


def test_remote_sessions_cannot_be_withdrawn(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    post(a, {"sdp": EXAMPLE.read_text()})
    (heard,) = wait_session(b, lambda s: True)
    with pytest.raises(ClientError) as info:
        b.client.request("DELETE", f"/v1/announcements/{heard['id']}")
    assert info.value.status == 403 and "remote" in str(info.value)


def test_local_announcements_resume_after_restart(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    made = post(a, {"sdp": EXAMPLE.read_text(), "interval": 1})
    wait_session(b, lambda s: True)
    a.kill()
    a.start()
    assert a.get("/v1/announcements")["announcements"][0]["id"] == made["id"]
    before = b.sessions()[0]["last_seen"]
    wait_for(lambda: b.sessions()[0]["last_seen"] > before, 5, what="re-announced")


def test_sapctl_announce_update_withdraw(pair: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    a, b = pair
    sock = str(a.socket)
    made = run(script("sapctl"), "--socket", sock, "announce", str(EXAMPLE), "--ttl", "16",
               "--blob", '{"room": "lab"}', "--json")
    assert made.returncode == 0, made.stderr
    sid = json.loads(made.stdout)["id"]
    assert json.loads(made.stdout)["announcement"]["targets"][0]["ttl"] == 16
    assert a.get(f"/v1/sessions/{sid}")["session"]["blob"] == {"room": "lab"}
    wait_session(b, lambda s: True)
    changed = tmp_path / "c.sdp"
    changed.write_text(EXAMPLE.read_text().replace("Lab tone 1 kHz", "Renamed"))
    assert run(script("sapctl"), "--socket", sock, "update", sid, str(changed)).returncode == 0
    wait_session(b, lambda s: s["name"] == "Renamed")
    listed = run(script("sapctl"), "--socket", sock, "announcements")
    assert "Renamed" in listed.stdout
    assert run(script("sapctl"), "--socket", sock, "withdraw", sid).returncode == 0
    wait_for(lambda: b.sessions() == [], 3, what="withdrawn")


def test_announce_directory(sapd_factory: Any, tmp_path: Path) -> None:
    folder = tmp_path / "announce.d"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "tone.sdp")
    b = sapd_factory(name="b").start()  # listening before a's first, immediate, send
    a = sapd_factory(name="a", config=f'[announce]\ndirectory = "{folder}"\n').start()
    wait_session(b, lambda s: s["name"] == "Lab tone 1 kHz", timeout=8)
    (folder / "tone.sdp").write_text(EXAMPLE.read_text().replace("1 kHz", "3 kHz"))
    wait_session(b, lambda s: s["name"] == "Lab tone 3 kHz", timeout=8)
    (folder / "tone.sdp").unlink()
    wait_for(lambda: b.sessions() == [], 8, what="file withdrawn")
    assert a.get("/v1/announcements")["announcements"] == []


def test_acl_with_a_second_real_uid(sapd_factory: Any) -> None:
    need_root()
    runtime = Path(tempfile.mkdtemp(prefix="sapd-acl-", dir="/tmp"))
    runtime.chmod(0o755)
    daemon = sapd_factory(name="acl", config='socket_group = "nogroup"\n')
    daemon.socket = runtime / "sapd.sock"
    daemon.start()
    try:
        owned = post(daemon, {"sdp": EXAMPLE.read_text()})
        shared = post(daemon, {"sdp": EXAMPLE.read_text().replace("3917001234", "3917001235"),
                               "acl": {"uids": [65534]}})

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                                   "--clear-groups", script("sapctl"), "--socket",
                                   str(daemon.socket), *args], capture_output=True, text=True,
                                  timeout=30, check=False, env={**os.environ, "HOME": "/tmp"})
        who = json.loads(as_nobody("list", "--json").stdout)
        assert who["total"] == 2  # anyone with socket access may read
        denied = as_nobody("withdraw", owned["id"])
        assert denied.returncode == 1 and "may not change" in denied.stderr
        assert daemon.get(f"/v1/announcements/{owned['id']}")["packets_sent"] >= 1
        allowed = as_nobody("withdraw", shared["id"])
        assert allowed.returncode == 0, allowed.stderr
        assert [a["id"] for a in daemon.get("/v1/announcements")["announcements"]] == \
            [owned["id"]]
    finally:
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)
